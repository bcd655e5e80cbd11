"""Plotly figures for the app: one score's class distribution, and model-versus-examiner agreement."""

from collections.abc import Sequence

import plotly.graph_objects as go

from grader.inference import AspectScore
from grader.scale import ScoreScale

BAR, REGRESSION, SOFT = "#9db4d6", "#c0392b", "#1f6f43"


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
        fig.add_trace(go.Scatter(x=[e for _, e in points], y=[m for m, _ in points], mode="markers", name=name,
                                 marker=dict(size=9, opacity=0.75),
                                 hovertemplate="examiner %{x}, model %{y:.2f}<extra>" + name + "</extra>"))
    low = scale.min if scale else min([*model, *examiner], default=0)
    high = scale.max if scale else max([*model, *examiner], default=1)
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="perfect agreement",
                             line=dict(color="#888", dash="dot")))
    fig.update_layout(xaxis_title="examiner final score", yaxis_title=f"{label} score", height=380,
                      template="plotly_white", margin=dict(l=50, r=20, t=30, b=40))
    return fig
