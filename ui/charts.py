"""Plotly figures for the app: one score's class distribution, a recording's timeline of speech, pauses and words,
and each examiner's drift against the model.

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
                      xaxis=dict(title=f"score ({scale.name} scale)",
                                 range=[scale.min - scale.step, scale.max + scale.step],
                                 tickvals=values),
                      yaxis=dict(title="probability", tickformat=".0%", range=[0, top]),
                      legend=dict(orientation="h", y=-0.25), bargap=0.1, height=340,
                      margin=dict(l=50, r=20, t=40, b=40), template="plotly_white")
    return fig


def drift_figure(rows: Sequence[Sequence]) -> go.Figure:
    """Each examiner's mean bias (their mark minus the model's) week by week, one line per examiner, from the drift
    table's rows (examiner, week, n, too few, exact %, bias): a line leaving 0 is an examiner drifting."""
    fig = go.Figure()
    for name in sorted({row[0] for row in rows}):
        mine = [row for row in rows if row[0] == name]
        fig.add_trace(go.Scatter(x=[r[1] for r in mine], y=[r[5] for r in mine], mode="lines+markers",
                                 name=html.escape(name), customdata=[[r[2], r[4]] for r in mine],
                                 hovertemplate="week of %{x}: marks higher by %{y:.2f} (n %{customdata[0]}, same "
                                               "class %{customdata[1]} %)<extra>%{fullData.name}</extra>"))
    fig.add_hline(y=0, line=dict(color="#888", dash="dot"))
    fig.update_layout(xaxis=dict(title="week of", type="category"), yaxis_title="marks higher than the model by",
                      height=340, template="plotly_white", margin=dict(l=50, r=20, t=30, b=40),
                      title=dict(text="Drift: each examiner against the model, week by week", x=0.02))
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
