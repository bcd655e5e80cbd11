"""The app's HTML: the result card and the evidence panel, pure functions of what was graded and stored.

Every piece of text that came from the recording, the model's input or the examiner is escaped.
"""

import html

from grader.inference import ZERO_SHOT_NOTE


def result_card(graded) -> str:
    """The result as HTML: scores on the checkpoint's scale, CEFR band, sub-scores, and any review warning."""
    if graded.prediction is None:
        return (f'<div class="card refused"><h3>Not scored</h3><p>{html.escape(graded.gate.reason or "")}</p>'
                f'<p class="meta">Stored as non-scorable (response #{graded.response_id}, '
                f'code <code>{graded.gate.code}</code>). Record again or upload another file.</p></div>')
    p, scale = graded.prediction, graded.prediction.scale
    head = p.scores[p.headline]
    band = p.cefr
    rows = "".join(f"<tr><td>{html.escape(aspect)}</td><td>{s.regression:.2f}</td><td>{s.soft:.2f}</td>"
                   f"<td>{s.hard:g}</td></tr>" for aspect, s in p.scores.items())
    review = ""
    if graded.review:
        items = "".join(f'<li class="{r.code}">{html.escape(r.text)}</li>' for r in graded.review)
        review = f'<div class="review"><strong>Review recommended</strong><ul>{items}</ul></div>'
    if p.uncalibrated:
        review += f'<div class="review"><strong>Uncalibrated</strong><p>{html.escape(ZERO_SHOT_NOTE)}.</p></div>'
    return (f'<div class="card"><div class="headline"><span class="label">{html.escape(p.headline)}</span>'
            f'<span class="score">{head.regression:.1f}</span>'
            f'<span class="of">regression score · soft {head.soft:.1f} · scale {scale.min:g}–{scale.max:g} '
            f'({html.escape(scale.name)})</span>'
            + (f'<span class="cefr">CEFR {band}</span>' if band else "") + "</div>"
            f"{review}<table><tr><th>aspect</th><th>regression</th><th>soft</th><th>most likely</th></tr>{rows}"
            f'</table><p class="meta">Response #{graded.response_id} · checkpoint {html.escape(p.checkpoint)} · '
            f"graded in {p.latency_s:.2f} s</p></div>")


def evidence_html(evidence: dict | None) -> str:
    """The evidence panel: transcript (low-confidence words marked), fluency measures, and the word-by-word
    comparison with the reference text. Every piece of text from the recording or the examiner is escaped."""
    if evidence is None:
        return '<div class="evidence"><p class="meta">No evidence: the recording was not scored.</p></div>'
    t, m = evidence["transcript"], evidence["measures"]
    if t["note"]:
        transcript = f'<p class="meta">{html.escape(t["note"])}</p>'
    else:
        transcript = " ".join(_word_span(w) for w in t["words"]) or '<span class="meta">(no words heard)</span>'
    parts = ['<div class="evidence">',
             f'<p class="note">Evidence only: none of this changes the score. Transcript by '
             f'{html.escape(evidence["sources"]["transcript"] or "no transcriber")}; it is often wrong on L2 speech. '
             f'<mark class="unsure">Marked</mark> words: Whisper gave them a probability under '
             f'{t["low_confidence_below"]:.0%}.</p>',
             f'<h4>Transcript</h4><p class="transcript">{transcript}</p>',
             "<h4>Fluency</h4>", _measures_table(m, evidence["pauses"])]
    if evidence.get("reference"):
        parts.append(_reference_html(evidence["reference"]))
    parts.append("</div>")
    return "".join(parts)


def _word_span(w: dict) -> str:
    title = f'{w["start"]:.2f}–{w["end"]:.2f} s, probability {w["probability"]:.0%}'
    tag = "mark" if w["low_confidence"] else "span"
    cls = ' class="unsure"' if w["low_confidence"] else ""
    return f'<{tag}{cls} title="{html.escape(title)}">{html.escape(w["text"])}</{tag}>'


def _measures_table(m: dict, pauses: list[dict]) -> str:
    def fmt(value, spec: str, unit: str = "") -> str:
        return "–" if value is None else f"{value:{spec}}{unit}"

    longest = max(pauses, key=lambda p: p["duration"], default=None)
    where = (f' (after “{html.escape(longest["after"])}”)' if longest and longest["after"] else "")
    rows = [
        ("Speech rate", f'{fmt(m["speech_rate_wpm"], ".0f")} words/min · {fmt(m["speech_rate_sps"], ".2f")} '
                        "syllables/s", "over the speaking span (first to last speech)"),
        ("Articulation rate", f'{fmt(m["articulation_rate_sps"], ".2f")} syllables/s', "over phonation time"),
        ("Silent pauses ≥ 250 ms", f'{m["pauses"]}, mean {fmt(m["mean_pause_s"], ".2f", " s")}',
         "between stretches of speech"),
        ("Longest pause", fmt(m["longest_pause_s"], ".2f", " s") + where, ""),
        ("Phonation-time ratio", f'{m["phonation_ratio"]:.0%}', "speaking span less pauses, over the span"),
        ("Speaking span", f'{m["span_s"]:.2f} s of {m["duration_s"]:.2f} s',
         f'{fmt(m["words"], "d")} words, {fmt(m["syllables"], "d")} syllables'),
    ]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td class=\"meta\">{c}</td></tr>" for a, b, c in rows)
    return f'<table class="measures">{body}</table>'


OP_LABELS = {"correct": "read as written", "substituted": "heard as another word", "omitted": "left out",
             "inserted": "added"}


def _reference_html(reference: dict) -> str:
    words = []
    for w in reference["words"]:
        why = "; ".join(w["why"])
        title = OP_LABELS[w["op"]] + (f" ({why})" if why else "")
        if w["phones"]:
            title += f' · phones expected [{w["phones"]["expected"]}], heard [{w["phones"]["heard"]}]'
        text = html.escape(w["reference"] if w["reference"] is not None else f'+{w["heard"]}')
        if w["op"] == "substituted":
            text += f' <span class="heard">→ {html.escape(w["heard"])}</span>'
        cls = f'op-{w["op"]}' + (" suspect" if w["likely_mispronounced"] else "")
        words.append(f'<span class="{cls}" title="{html.escape(title)}">{text}</span>')
    c = reference["counts"]
    likely = [w for w in reference["words"] if w["likely_mispronounced"]]
    summary = (f'{c["correct"]} read as written · {c["substituted"]} substituted · {c["omitted"]} left out · '
               f'{c["inserted"]} added · <strong>{len(likely)} likely mispronounced</strong> (underlined)')
    rows = "".join(f'<tr><td>{html.escape(w["reference"])}</td><td>{html.escape(w["heard"] or "")}</td>'
                   f'<td>{html.escape(w["phones"]["expected"]) if w["phones"] else ""}</td>'
                   f'<td>{html.escape(w["phones"]["heard"]) if w["phones"] else ""}</td>'
                   f'<td>{html.escape("; ".join(w["why"]))}</td></tr>' for w in likely)
    table = (f'<table class="suspects"><tr><th>word</th><th>Whisper heard</th><th>phones expected</th>'
             f'<th>phones heard</th><th>why</th></tr>{rows}</table>') if likely else ""
    note = f'<p class="meta">{html.escape(reference["phones_note"])}</p>' if reference["phones_note"] else ""
    return (f'<h4>Against the reference text</h4><p class="reference">{" ".join(words)}</p>'
            f'<p class="meta">{summary}</p>{table}{note}')
