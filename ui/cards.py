"""The app's HTML: the result card and the evidence panel, pure functions of what was graded and stored.

Every piece of text that came from the recording, the model's input or the examiner is escaped.
"""

import html

from grader.inference import ZERO_SHOT_NOTE
from grader.evidence.alignment import spoken_words
from grader.report import BANDS


# One plain sentence for each number behind the headline ("about this score").
ABOUT = {"soft": "the expected score: the average of the grader's probabilities over the scale's classes. It is "
                 "the headline, the number the grader's agreement with experts is measured on",
         "regression": "a second estimate, from a head trained to predict the score directly; far from the "
                       "expected score, the grader is unsure",
         "hard": "the single class the grader finds most probable; it ignores how the rest of the probability "
                 "is spread"}
STRETCHED = ("all three and the chart are moved away from the grader's average, {:.0%} of the way to the spread of "
             "the experts' scores: trained on few weak answers, a grader scores them too high (see the model card)")
BLENDED = ("{} also weigh a second reading of the recording, a linear model on every layer of the audio encoder,{} "
           "blended with the grader's own by weights fitted on speakers it never heard (see the model card)")
BLENDED_TEXT = (" and what the reference text tells: the grader's lowest and mean word accuracy (the word scores "
                "below) and how clearly the recording says each word,")


def result_card(graded) -> str:
    """The result as HTML: one headline number (the expected score), what it is, its band and likely range, the
    review reasons in an examiner's words, the other aspects, and behind "about this score" the three numbers
    the grader gives (regression, soft, most likely), each explained."""
    if graded.prediction is None:
        return (f'<div class="card refused"><h3>Not scored</h3><p>{html.escape(graded.gate.reason or "")}</p>'
                f'<p class="meta">Stored as non-scorable (response #{graded.response_id}, '
                f'code <code>{html.escape(graded.gate.code or "")}</code>). Record again or upload another file.</p>'
                "</div>")
    p, scale = graded.prediction, graded.prediction.scale
    head = p.scores[p.headline]
    band = f"CEFR {p.cefr}" if p.cefr else _expert_band(scale, round(head.soft, 1))
    low, high, mass = likely_range(head.probs, scale)
    what = (f"The grader's expected {html.escape(p.headline)} score for this answer, on the {html.escape(scale.name)} "
            f"scale ({scale.min:g}–{scale.max:g}). Likely range {low:g}–{high:g} ({mass:.0%} of the probability; "
            "the chart shows all of it).")
    review = ""
    if graded.review:
        items = "".join(f'<li class="{html.escape(r.code)}">{html.escape(_sentence(r.text))}</li>'
                        for r in graded.review)
        review = f'<div class="review"><strong>Review recommended</strong><ul>{items}</ul></div>'
    if p.uncalibrated:
        note = html.escape(_sentence(ZERO_SHOT_NOTE))
        review += f'<div class="review"><strong>Uncalibrated</strong><p>{note}.</p></div>'
    others = "".join(f'<tr><th scope="row">{html.escape(a)}</th><td>{s.soft:.1f}</td></tr>'
                     for a, s in p.scores.items() if a != p.headline)
    aspects = (f'<table class="aspects"><tr><th scope="col">aspect</th><th scope="col">expected score</th></tr>'
               f"{others}</table>") if others else ""
    rows = "".join(f'<tr><th scope="row">{html.escape(a)}</th><td>{s.soft:.2f}</td><td>{s.regression:.2f}</td>'
                   f"<td>{s.hard:g}</td></tr>" for a, s in p.scores.items())
    about = ('<details class="about"><summary>About this score</summary>'
             f'<table class="heads"><tr><th scope="col">aspect</th><th scope="col">expected (soft)</th>'
             f'<th scope="col">regression</th><th scope="col">most likely</th></tr>{rows}</table><ul>'
             + "".join(f"<li><strong>{name}</strong>: {ABOUT[key]}.</li>" for name, key in (
                 ("Expected (soft)", "soft"), ("Regression", "regression"), ("Most likely", "hard")))
             + (f"<li><strong>Blended</strong>: {html.escape(_sentence(_blended(p)))}.</li>" if p.blended else "")
             + (f"<li><strong>Stretched</strong>: {STRETCHED.format(p.stretch)}.</li>" if p.stretch else "")
             + "</ul></details>")
    return (f'<div class="card"><div class="headline"><span class="label">{html.escape(p.headline)}</span>'
            f'<span class="score">{head.soft:.1f}</span><span class="of">of {scale.max:g}</span>'
            + (f'<span class="cefr">{html.escape(band)}</span>' if band else "") + "</div>"
            f'<p class="what">{what}</p>{review}{aspects}{about}'
            f'<p class="meta">Response #{graded.response_id} · checkpoint {html.escape(p.checkpoint)} · '
            f"graded in {p.latency_s:.2f} s</p></div>")


def _blended(p) -> str:
    return BLENDED.format(_listed(p.blended), BLENDED_TEXT if p.blended_text else "")


def likely_range(probs: list[float], scale, mass: float = 0.8) -> tuple[float, float, float]:
    """The narrowest run of neighbouring classes holding at least `mass` of the probability: (low, high, its
    share). A wide range is the distribution telling the examiner the grader is unsure."""
    values = scale.values.tolist()
    best = (0, len(probs) - 1)
    for i in range(len(probs)):
        total = 0.0
        for j in range(i, len(probs)):
            total += probs[j]
            if total >= mass - 1e-9:
                if j - i < best[1] - best[0]:
                    best = (i, j)
                break
    return values[best[0]], values[best[1]], float(sum(probs[best[0]: best[1] + 1]))


def _expert_band(scale, score: float) -> str | None:
    """On speechocean762 (no CEFR), the expert band the grader's accuracy is reported in (README, grader.report)."""
    if scale.name != "speechocean762":
        return None
    low, high = next(b for b in BANDS if score < b[1] + 1 or b == BANDS[-1])
    return f"band {low}–{high}"


def _listed(names: list[str]) -> str:
    """"fluency", "fluency and prosodic", "total, fluency and prosodic": names in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


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
    if "word_scores" in evidence:
        parts.append(word_scores_html(evidence["word_scores"]))
    if evidence.get("reference"):
        parts.append(_reference_html(evidence["reference"], evidence.get("word_scores")))
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


WORD_BANDS = ((5.0, "w-poor", "under 5: many phones wrong, or another word"),
              (8.0, "w-fair", "5 to 8: accented, some phones wrong"),
              (float("inf"), "w-good", "8 or more: clear"))


def word_scores_html(word_scores: dict) -> str:
    """Each reference word with the grader's predicted accuracy (0-10): colour and underline style by band (so not
    by colour alone), the figures on hover and for screen readers. Without them, the note says why."""
    words = word_scores["words"]
    if not words:
        return (f'<h4>Word scores</h4><p class="meta word-note">{html.escape(_sentence(word_scores["note"] or ""))}'
                ".</p>")
    chips = " ".join(_word_chip(w) for w in words)
    legend = " · ".join(f'<span class="wscore {cls}">{label}</span>' for _, cls, label in WORD_BANDS)
    return (f'<h4>Word scores</h4><p class="word-scores">{chips}</p><p class="meta">The grader\'s pronunciation '
            f"accuracy for each word of the reference text, 0–10 as the experts score words (hover a word for its "
            f"figures): {legend}. A prediction, like the score: listen before you rely on it.</p>")


def _word_chip(w: dict) -> str:
    score = w.get("accuracy", w.get("total"))
    figures = ", ".join(f"{k} {v:.1f}" for k, v in w.items() if k != "word" and isinstance(v, int | float))
    cls = next(c for limit, c, _ in WORD_BANDS if score is not None and score < limit) if score is not None else ""
    label = html.escape(f'{w["word"]}: {figures} (of 10)')
    word = html.escape(w["word"])
    return f'<span class="wscore {cls}" title="{label}" aria-label="{label}" tabindex="0">{word}</span>'


OP_LABELS = {"correct": "read as written", "substituted": "heard as another word", "omitted": "left out",
             "inserted": "added"}


def reference_word_scores(reference: dict, word_scores: dict | None) -> list[float | None] | None:
    """The grader's accuracy for each reference word of the comparison, where both read the same words (the
    comparison splits hyphenated words and drops punctuation); None otherwise."""
    if not word_scores or not word_scores["words"]:
        return None
    pieces = [(piece, w.get("accuracy")) for w in word_scores["words"] for piece in spoken_words(w["word"])]
    if [piece for piece, _ in pieces] != [w["reference"] for w in reference["words"] if w["reference"] is not None]:
        return None
    return [accuracy for _, accuracy in pieces]


def _reference_html(reference: dict, word_scores: dict | None = None) -> str:
    scores = iter(reference_word_scores(reference, word_scores) or [])
    words, likely = [], []
    for w in reference["words"]:
        accuracy = next(scores, None) if w["reference"] is not None else None
        why = "; ".join(w["why"])
        title = OP_LABELS[w["op"]] + (f" ({why})" if why else "")
        if w["phones"]:
            title += f' · phones expected [{w["phones"]["expected"]}], heard [{w["phones"]["heard"]}]'
        if accuracy is not None:
            title += f" · the grader's word accuracy {accuracy:.1f}"
        text = html.escape(w["reference"] if w["reference"] is not None else f'+{w["heard"]}')
        if w["op"] == "substituted":
            text += f' <span class="heard">→ {html.escape(w["heard"])}</span>'
        cls = f'op-{w["op"]}' + (" suspect" if w["likely_mispronounced"] else "")
        words.append(f'<span class="{cls}" title="{html.escape(title)}">{text}</span>')
        if w["likely_mispronounced"]:
            likely.append((w, accuracy))
    c = reference["counts"]
    summary = (f'{c["correct"]} read as written · {c["substituted"]} substituted · {c["omitted"]} left out · '
               f'{c["inserted"]} added · <strong>{len(likely)} likely mispronounced</strong> (underlined)')
    rated = word_scores is not None and bool(word_scores["words"])
    rows = "".join(f'<tr><td>{html.escape(w["reference"])}</td><td>{html.escape(w["heard"] or "")}</td>'
                   f'<td>{html.escape(w["phones"]["expected"]) if w["phones"] else ""}</td>'
                   f'<td>{html.escape(w["phones"]["heard"]) if w["phones"] else ""}</td>'
                   + (f'<td>{"" if a is None else f"{a:.1f}"}</td>' if rated else "")
                   + f'<td>{html.escape("; ".join(w["why"]))}</td></tr>' for w, a in likely)
    table = ('<table class="suspects"><tr><th>word</th><th>Whisper heard</th><th>phones expected</th>'
             '<th>phones heard</th>' + ("<th>grader's accuracy</th>" if rated else "")
             + f"<th>why</th></tr>{rows}</table>") if likely else ""
    note = f'<p class="meta">{html.escape(reference["phones_note"])}</p>' if reference["phones_note"] else ""
    return (f'<h4>Against the reference text</h4><p class="reference">{" ".join(words)}</p>'
            f'<p class="meta">{summary}</p>{table}{note}')
