"""Plotly figures for the app: one score's class distribution, a recording's timeline of speech, pauses and words,
and model-versus-examiner agreement.

Plotly reads text as markup (<a href>, <span style>, <br>): every string from a person or a recording (examiner
names, transcript words) is HTML-escaped first, which Plotly shows as the literal text.
"""

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from grader.audio import SAMPLE_RATE
from grader.inference import AspectScore
from grader.scale import ScoreScale

BAR, REGRESSION, SOFT = "#9db4d6", "#c0392b", "#1f6f43"
WAVE, SPEECH, PAUSE, WORD, UNSURE = "#5b7fa6", "#e3f1e6", "#f6d5d1", "#dfe7f2", "#f5c26b"


def distribution_figure(score: AspectScore, scale: ScoreScale, aspect: str = "total") -> go.Figure:
    """Bars of the class probabilities, with the regression and soft scores as vertical lines on the same
    axis: a spread-out distribution or lines far apart is what tells an examiner to listen again."""
    values = scale.values.tolist()
    top = max(max(score.probs), 0.05) * 1.15
    fig = go.Figure(go.Bar(x=values, y=score.probs, width=0.8 * scale.step, name="class probability",
                           marker_color=BAR, hovertemplate="score %{x}: %{y:.1%}<extra></extra>"))
    for name, value, color, dash in (("regression", score.regression, REGRESSION, "solid"),
                                     ("soft", score.soft, SOFT, "dash")):
        fig.add_trace(go.Scatter(x=[value, value], y=[0, top], mode="lines", name=f"{name} {value:.2f}",
                                 line=dict(color=color, width=3, dash=dash),
                                 hovertemplate=f"{name} score {value:.2f}<extra></extra>"))
    fig.update_layout(title=dict(text=f"{aspect.capitalize()}: class distribution", x=0.02),
                      xaxis=dict(title=f"score ({scale.name} scale)", range=[scale.min - scale.step, scale.max + scale.step],
                                 tickvals=values),
                      yaxis=dict(title="probability", tickformat=".0%", range=[0, top]),
                      legend=dict(orientation="h", y=-0.25), bargap=0.1, height=340,
                      margin=dict(l=50, r=20, t=40, b=40), template="plotly_white")
    return fig


def agreement_figure(model: Sequence[float], examiner: Sequence[float], who: Sequence[str],
                     scale: ScoreScale | None, label: str = "model") -> go.Figure:
    """Model score against the examiner's final score, one colour per examiner, with the line of perfect
    agreement."""
    fig = go.Figure()
    for name in sorted(set(who)):
        points = [(m, e) for m, e, w in zip(model, examiner, who) if w == name]
        fig.add_trace(go.Scatter(x=[e for _, e in points], y=[m for m, _ in points], mode="markers",
                                 name=html.escape(name), marker=dict(size=9, opacity=0.75),
                                 hovertemplate="examiner %{x}, model %{y:.2f}<extra>%{fullData.name}</extra>"))
    low = scale.min if scale else min([*model, *examiner], default=0)
    high = scale.max if scale else max([*model, *examiner], default=1)
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="perfect agreement",
                             line=dict(color="#888", dash="dot")))
    fig.update_layout(xaxis_title="examiner final score", yaxis_title=f"{label} score", height=380,
                      template="plotly_white", margin=dict(l=50, r=20, t=30, b=40))
    return fig


def timeline_figure(evidence: dict, audio: np.ndarray, points_per_second: int = 100) -> go.Figure:
    """The recording over time: its waveform envelope over the speech the VAD found (green) and the silent pauses
    (red, with their length), and below it each transcript word over the time Whisper gives it (orange: low
    confidence). Hovering a word shows its times and probability."""
    hop = max(SAMPLE_RATE // points_per_second, 1)
    usable = len(audio) // hop * hop
    frames = np.abs(audio[:usable]).reshape(-1, hop).max(axis=1) if usable else np.zeros(1)
    envelope = 0.3 * frames / (float(frames.max()) or 1.0)
    times = (np.arange(len(envelope)) + 0.5) * hop / SAMPLE_RATE
    fig = go.Figure()
    for start, end in evidence["speech"]:
        fig.add_shape(type="rect", x0=start, x1=end, y0=0.34, y1=1.0, fillcolor=SPEECH, line_width=0, layer="below")
    for pause in evidence["pauses"]:
        fig.add_shape(type="rect", x0=pause["start"], x1=pause["end"], y0=0.34, y1=1.0, fillcolor=PAUSE,
                      line_width=0, layer="below", label=dict(text=f"{pause['duration']:.2f} s",
                                                              textposition="top center", font=dict(size=11)))
    fig.add_trace(go.Scatter(x=np.concatenate([times, times[::-1]]),
                             y=np.concatenate([0.67 + envelope, 0.67 - envelope[::-1]]), fill="toself",
                             mode="lines", line=dict(color=WAVE, width=0.5), fillcolor=WAVE, hoverinfo="skip"))
    words = evidence["transcript"]["words"]
    for w in words:
        fig.add_shape(type="rect", x0=w["start"], x1=max(w["end"], w["start"] + 0.02), y0=0.04, y1=0.28,
                      fillcolor=UNSURE if w["low_confidence"] else WORD, line=dict(color="#8a9bb5", width=0.5),
                      layer="below")
    fig.add_trace(go.Scatter(
        x=[(w["start"] + w["end"]) / 2 for w in words], y=[0.16] * len(words), mode="text",
        text=[html.escape(w["text"]) for w in words], textfont=dict(size=12),
        customdata=[[w["start"], w["end"], w["probability"]] for w in words],
        hovertemplate="%{text}<br>%{customdata[0]:.2f}–%{customdata[1]:.2f} s<br>"
                      "probability %{customdata[2]:.0%}<extra></extra>"))
    fig.update_layout(height=260, template="plotly_white", showlegend=False, margin=dict(l=20, r=20, t=20, b=40),
                      xaxis=dict(title="time (s)", range=[0, len(audio) / SAMPLE_RATE]),
                      yaxis=dict(range=[0, 1.02], visible=False, fixedrange=True))
    return fig
