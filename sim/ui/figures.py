"""The UI's three pictures as SVG text: the ecosystem network, the phase portrait of the selected
alliance and the time series.

Plain functions from numbers to SVG strings (no Solara, no model access), so they are tested
without a browser, drawn by the browser itself (only text crosses the websocket, no PNG) and
written as-is into an export. Elements that can be clicked or hovered carry data-al (an alliance
id), data-org (an organization id) and data-tip (the hover text); the page's Vue component
turns clicks on them into selections.
"""

from __future__ import annotations

from html import escape

import numpy as np

GREEN, RED, AMBER, BLUE, GREY = "#1a9850", "#d73027", "#f39c12", "#1f5fbf", "#9a9a9a"
TRUST_COLOR, OPEN_COLOR = "#1f5fbf", "#8e44ad"


def _mix(c1: str, c2: str, t: float) -> str:
    a = np.array([int(c1[i:i + 2], 16) for i in (1, 3, 5)], float)
    b = np.array([int(c2[i:i + 2], 16) for i in (1, 3, 5)], float)
    r = np.rint(a + (b - a) * t).astype(int)
    return "#" + "".join(f"{x:02x}" for x in r)


# trust 0 -> red, 0.5 -> amber, 1 -> green, in 101 steps
PALETTE = [(_mix(RED, "#e8b400", 2 * t) if t < 0.5 else _mix("#e8b400", GREEN, 2 * t - 1))
           for t in np.linspace(0, 1, 101)]


def trust_color(t: float) -> str:
    return PALETTE[int(round(100 * min(1.0, max(0.0, float(t)))))]


FONT = 23  # text size in viewBox units: >= 16 px on screen once the SVG is scaled to fit


def _f(x: float) -> str:
    return f"{x:.1f}"


# --- the ecosystem --------------------------------------------------------------------------
NET_W, NET_H, NET_PAD = 640, 480, 28


def scale_positions(pos: np.ndarray) -> np.ndarray:
    """Layout coordinates to viewBox pixels (kept still between resets)."""
    if len(pos) == 0:
        return pos
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    unit = (pos - lo) / span
    out = np.empty_like(unit)
    out[:, 0] = NET_PAD + unit[:, 0] * (NET_W - 2 * NET_PAD)
    out[:, 1] = NET_PAD + (1 - unit[:, 1]) * (NET_H - 2 * NET_PAD)
    if len(pos) == 2:
        out[:, 1] = NET_H / 2
    return out


def network_svg(xy: np.ndarray, al_org: np.ndarray, active: np.ndarray, trust: np.ndarray,
                faded: np.ndarray, org_abundant: np.ndarray, selected_al: int | None,
                selected_org: int | None, al_tips: dict[int, str], org_tips: list[str]) -> str:
    """Organizations as dots (green: mostly 'trust & we', red: mostly 'fear & me'), alliances as
    lines coloured and thickened by trust, recently ended ones dotted; the selection ringed."""
    n = len(xy)
    many = n > 60
    out = [f'<svg viewBox="0 0 {NET_W} {NET_H}" xmlns="http://www.w3.org/2000/svg" '
           f'class="spiral-svg" role="img" aria-label="ecosystem network">']
    out.append(f'<rect width="{NET_W}" height="{NET_H}" fill="#ffffff"/>')
    sel_edges = set()
    if selected_org is not None:
        sel_edges = set(np.flatnonzero(active & ((al_org[:, 0] == selected_org)
                                                 | (al_org[:, 1] == selected_org))).tolist())
    if selected_al is not None:
        sel_edges.add(int(selected_al))
    for a in sel_edges:  # halo under the selected alliance(s)
        (x1, y1), (x2, y2) = xy[al_org[a]]
        out.append(f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
                   f'stroke="{BLUE}" stroke-opacity="0.35" stroke-width="14" '
                   f'stroke-linecap="round"/>')
    for a in np.flatnonzero(faded):
        (x1, y1), (x2, y2) = xy[al_org[a]]
        out.append(f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
                   f'stroke="{GREY}" stroke-width="1.5" stroke-dasharray="3 4"/>')
    base = 0.6 if many else 2.0
    for a in np.flatnonzero(active):
        (x1, y1), (x2, y2) = xy[al_org[a]]
        t = float(trust[a])
        out.append(f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
                   f'stroke="{trust_color(t)}" stroke-width="{base + (2.5 if many else 6) * t:.1f}"'
                   f' stroke-opacity="{0.55 if many else 0.9}"/>')
    # invisible wide hit lines: alliances are easy to click even when thin
    for a in np.flatnonzero(active | faded):
        (x1, y1), (x2, y2) = xy[al_org[a]]
        tip = escape(al_tips.get(int(a), ""), quote=True)
        out.append(f'<line class="hit" data-al="{int(a)}" data-tip="{tip}" x1="{_f(x1)}" '
                   f'y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" stroke="#000" '
                   f'stroke-opacity="0" stroke-width="{8 if many else 16}"/>')
    for a in sel_edges:  # the selection drawn on top, so it shows in a dense network
        (x1, y1), (x2, y2) = xy[al_org[a]]
        out.append(f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
                   f'stroke="{BLUE}" stroke-width="{4 if many else 5}" stroke-linecap="round" '
                   f'pointer-events="none"/>')
    r = 5.0 if n > 120 else 7.0 if many else 11.0 if n > 12 else 20.0
    ends = set(al_org[selected_al].tolist()) if selected_al is not None else set()
    for i in range(n):
        x, y = xy[i]
        ring = (i in ends) or i == selected_org
        fill = GREEN if org_abundant[i] else RED
        out.append(f'<circle data-org="{i}" data-tip="{escape(org_tips[i], quote=True)}" '
                   f'cx="{_f(x)}" cy="{_f(y)}" r="{r + (3 if ring else 0):.1f}" fill="{fill}" '
                   f'stroke="{BLUE if ring else "#ffffff"}" stroke-width="{4 if ring else 1.2}"/>')
        if n <= 12:
            out.append(f'<text x="{_f(x)}" y="{_f(y + 8)}" text-anchor="middle" '
                       f'font-size="{FONT}" fill="#fff" pointer-events="none">{i}</text>')
    out.append("</svg>")
    return "".join(out)


# --- the phase portrait ---------------------------------------------------------------------
PH_W, PH_H, PH_L, PH_B, PH_T, PH_R = 470, 470, 66, 66, 12, 16


def _px(t, o):
    w, h = PH_W - PH_L - PH_R, PH_H - PH_T - PH_B
    return PH_L + np.asarray(t) * w, PH_T + (1 - np.asarray(o)) * h


def phase_background(xs, dT, dO, bx, score) -> str:
    """The still part of the portrait for one mindset pair: where starts end up (green: they
    spiral in, red: out), the arrows of one step, and the two resting points. Cached per pair."""
    out = []
    n = len(bx)
    cell = 1.0 / (n - 1)
    for r in range(n):  # run-length rows of the basin grid
        row = score[r] >= 0.5
        c = 0
        while c < n:
            k = c
            while k + 1 < n and row[k + 1] == row[c]:
                k += 1
            t0, t1 = max(0.0, bx[c] - cell / 2), min(1.0, bx[k] + cell / 2)
            o0, o1 = max(0.0, bx[r] - cell / 2), min(1.0, bx[r] + cell / 2)
            x0, y1 = _px(t0, o0)
            x1, y0 = _px(t1, o1)
            out.append(f'<rect x="{_f(x0)}" y="{_f(y0)}" width="{_f(x1 - x0 + 0.4)}" '
                       f'height="{_f(y1 - y0 + 0.4)}" fill="{GREEN if row[c] else RED}" '
                       f'fill-opacity="0.10"/>')
            c = k + 1
    mag = np.hypot(dT, dO)
    top = float(mag.max()) or 1.0
    L = 0.9 / (len(xs) - 1)
    for r, o in enumerate(xs):
        for c, t in enumerate(xs):
            m = mag[r, c]
            if m < 1e-9:
                continue
            ux, uy = dT[r, c] / m, dO[r, c] / m
            ln = L * (0.35 + 0.65 * (m / top) ** 0.5)
            xa, ya = _px(t - ux * ln / 2, o - uy * ln / 2)
            xb, yb = _px(t + ux * ln / 2, o + uy * ln / 2)
            out.append(f'<line x1="{_f(xa)}" y1="{_f(ya)}" x2="{_f(xb)}" y2="{_f(yb)}" '
                       f'stroke="#8a8a8a" stroke-width="1.4" marker-end="url(#arrow)"/>')
    if score.max() > 0.8:
        x, y = _px(0.97, 0.97)
        out.append(_star(x, y, GREEN))
    if score.min() < 0.2:
        x, y = _px(0.03, 0.03)
        out.append(_star(x, y, RED))
    return "".join(out)


def _star(x, y, color) -> str:
    ang = np.pi / 2 + np.arange(10) * np.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, 11, 4.5)
    pts = " ".join(f"{_f(x + r * np.cos(a))},{_f(y - r * np.sin(a))}" for a, r in zip(ang, rad))
    return f'<polygon points="{pts}" fill="{color}" stroke="#fff" stroke-width="1"/>'


def phase_back_svg(background: str) -> str:
    """The still layer of the portrait (drawn once per mindset pair, under the live layer)."""
    return (f'<svg viewBox="0 0 {PH_W} {PH_H}" xmlns="http://www.w3.org/2000/svg" '
            f'class="spiral-svg" role="img" aria-label="where a calm pair goes">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" '
            'markerHeight="5" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a8a8a"/>'
            f'</marker></defs><rect width="{PH_W}" height="{PH_H}" fill="#fff"/>{background}'
            '</svg>')


def compose(back: str, front: str) -> str:
    """One SVG file from the still and the live layer (for the export)."""
    inner = front[front.index(">") + 1:front.rindex("</svg>")]
    return back[:back.rindex("</svg>")] + inner + "</svg>"


def phase_svg(path_t: np.ndarray, path_o: np.ndarray,
              marks: list[tuple[float, float, str]], ended: bool, label_in: bool,
              label_out: bool) -> str:
    """The live layer of the portrait: axes, the alliance's path (older part lighter), its
    current point and a numbered marker where each intervention was applied."""
    out = [f'<svg viewBox="0 0 {PH_W} {PH_H}" xmlns="http://www.w3.org/2000/svg" '
           f'class="spiral-svg" role="img" aria-label="phase portrait">']
    x0, y0 = _px(0, 0)
    x1, y1 = _px(1, 1)
    out.append(f'<rect x="{_f(x0)}" y="{_f(y1)}" width="{_f(x1 - x0)}" height="{_f(y0 - y1)}" '
               f'fill="none" stroke="#444" stroke-width="1"/>')
    for v in (0, 0.5, 1):
        xv, _ = _px(v, 0)
        _, yv = _px(0, v)
        out.append(f'<text x="{_f(xv)}" y="{_f(y0 + 26)}" text-anchor="middle" '
                   f'font-size="{FONT}" fill="#333">{v:g}</text>')
        out.append(f'<text x="{_f(x0 - 8)}" y="{_f(yv + 8)}" text-anchor="end" '
                   f'font-size="{FONT}" fill="#333">{v:g}</text>')
    out.append(f'<text x="{_f((x0 + x1) / 2)}" y="{PH_H - 8}" text-anchor="middle" '
               f'font-size="{FONT}" fill="#222">trust →</text>')
    out.append(f'<text transform="translate(24 {_f((y0 + y1) / 2)}) rotate(-90)" '
               f'text-anchor="middle" font-size="{FONT}" fill="#222">openness →</text>')
    if label_in:
        xa, ya = _px(0.97, 0.9)
        out.append(f'<text x="{_f(xa)}" y="{_f(ya)}" text-anchor="end" font-size="{FONT}" '
                   f'fill="{GREEN}" font-weight="bold">spirals in</text>')
    if label_out:
        xa, ya = _px(0.05, 0.1)
        out.append(f'<text x="{_f(xa + 14)}" y="{_f(ya)}" font-size="{FONT}" fill="{RED}" '
                   f'font-weight="bold">spirals out</text>')
    if len(path_t):
        px, py = _px(path_t, path_o)
        k = len(px)
        split = max(0, k - 40)
        if split > 1:
            pts = " ".join(f"{_f(a)},{_f(b)}" for a, b in zip(px[:split + 1], py[:split + 1]))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{BLUE}" '
                       f'stroke-opacity="0.35" stroke-width="2"/>')
        pts = " ".join(f"{_f(a)},{_f(b)}" for a, b in zip(px[split:], py[split:]))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{BLUE}" stroke-width="3"/>')
        for t, o, tag in marks:
            mx, my = _px(t, o)
            out.append(f'<g class="mark"><rect x="{_f(mx - 13)}" y="{_f(my - 13)}" width="26" '
                       f'height="26" transform="rotate(45 {_f(mx)} {_f(my)})" fill="#fff" '
                       f'stroke="#111" stroke-width="2"/><text x="{_f(mx)}" y="{_f(my + 7)}" '
                       f'text-anchor="middle" font-size="20" font-weight="bold">{escape(tag)}'
                       f'</text></g>')
        cx, cy = px[-1], py[-1]
        if ended:
            out.append(f'<g class="now"><line x1="{_f(cx - 10)}" y1="{_f(cy - 10)}" '
                       f'x2="{_f(cx + 10)}" y2="{_f(cy + 10)}" stroke="#111" stroke-width="4"/>'
                       f'<line x1="{_f(cx - 10)}" y1="{_f(cy + 10)}" x2="{_f(cx + 10)}" '
                       f'y2="{_f(cy - 10)}" stroke="#111" stroke-width="4"/></g>')
        else:
            out.append(f'<circle class="now" cx="{_f(cx)}" cy="{_f(cy)}" r="9" fill="{BLUE}" '
                       f'stroke="#fff" stroke-width="2"/>')
    out.append("</svg>")
    return "".join(out)


# --- the time series ------------------------------------------------------------------------
SE_W, SE_H, SE_L, SE_B, SE_T, SE_R = 720, 190, 44, 34, 10, 14
SERIES_STYLE = {  # name: (colour, dash)
    "mean trust": (TRUST_COLOR, ""),
    "mean openness": (OPEN_COLOR, "8 5"),
    "share spiral in": (GREEN, ""),
    "share spiral out": (RED, ""),
    "selected alliance trust": (BLUE, "2 4"),
}


def series_svg(steps: np.ndarray, lines: dict[str, np.ndarray],
               marks: list[tuple[int, str]]) -> str:
    """Lines over steps on a 0..1 axis; a vertical marker at each intervention's step."""
    w, h = SE_W - SE_L - SE_R, SE_H - SE_T - SE_B
    out = [f'<svg viewBox="0 0 {SE_W} {SE_H}" xmlns="http://www.w3.org/2000/svg" '
           f'class="spiral-svg" role="img" aria-label="time series">',
           f'<rect width="{SE_W}" height="{SE_H}" fill="#fff"/>']
    lo = int(steps[0]) if len(steps) else 0
    hi = max(int(steps[-1]) if len(steps) else 1, lo + 10)

    def X(s):
        return SE_L + (np.asarray(s, float) - lo) / (hi - lo) * w

    def Y(v):
        return SE_T + (1 - np.asarray(v, float)) * h

    for v in (0, 0.5, 1):
        out.append(f'<line x1="{SE_L}" x2="{SE_W - SE_R}" y1="{_f(Y(v))}" y2="{_f(Y(v))}" '
                   f'stroke="#ddd"/><text x="{SE_L - 6}" y="{_f(Y(v) + 7)}" text-anchor="end" '
                   f'font-size="{FONT}" fill="#333">{v:g}</text>')
    for s in np.unique(np.linspace(lo, hi, 6).round().astype(int)):
        out.append(f'<text x="{_f(X(s))}" y="{SE_H - 8}" text-anchor="middle" '
                   f'font-size="{FONT}" fill="#333">{s}</text>')
    for s, tag in marks:
        if lo <= s <= hi:
            xm = _f(X(s))
            out.append(f'<g class="mark"><line x1="{xm}" x2="{xm}" y1="{SE_T}" '
                       f'y2="{SE_T + h}" stroke="#111" stroke-width="1.5" stroke-dasharray="4 3"/>'
                       f'<text x="{xm}" y="{SE_T + 18}" text-anchor="middle" font-size="{FONT}" '
                       f'font-weight="bold" fill="#111">{escape(tag)}</text></g>')
    if len(steps) > 1:
        xs = X(steps)
        for name, ys in lines.items():
            color, dash = SERIES_STYLE.get(name, ("#333", ""))
            pts = " ".join(f"{_f(a)},{_f(b)}" for a, b in zip(xs, Y(np.clip(ys, 0, 1))))
            da = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" '
                       f'stroke-width="2.6"{da}/>')
    out.append("</svg>")
    return "".join(out)
