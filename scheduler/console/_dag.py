"""A workflow's graph drawn as SVG on the server: nodes in columns by depth, edges left to right.

Each node sits in the column of its longest path from a root, so every edge points rightwards; within
a column nodes keep the workflow's order. A node's colour is its status in the chosen workflow
instance (grey when it has not started, or when no instance is chosen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from sx.processors import InstanceStatus
from sx.scheduler.console._format import status_class, status_name

__all__ = ["DagNode", "dag_svg"]

NODE_WIDTH = 180
NODE_HEIGHT = 48
COLUMN_GAP = 70
ROW_GAP = 22
MARGIN = 12


@dataclass(frozen=True, slots=True)
class DagNode:
    """One node: its job, its name, and in the chosen workflow instance its status and instance."""

    job_id: int
    name: str
    status: InstanceStatus | None = None
    href: str = ""
    """Where clicking the node leads (its instance, else its job); "" for no link."""


def _columns(nodes: Sequence[int], edges: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Each node's column: the length of its longest path from a root (the graph is acyclic)."""
    upstream: dict[int, list[int]] = {node: [] for node in nodes}
    for source, target in edges:
        upstream.setdefault(target, []).append(source)
    column: dict[int, int] = {}

    def depth(node: int, seen: frozenset[int]) -> int:
        if node in column:
            return column[node]
        if node in seen:  # a cycle cannot be stored; guard anyway so drawing never loops
            return 0
        parents = upstream.get(node, [])
        column[node] = 1 + max((depth(p, seen | {node}) for p in parents), default=-1)
        return column[node]

    for node in nodes:
        depth(node, frozenset())
    return column


def dag_svg(nodes: Sequence[DagNode], edges: Sequence[tuple[int, int]], *, title: str) -> Markup:
    """The graph as an inline ``<svg>`` (role img, titled), each node a link with its status."""
    columns = _columns([n.job_id for n in nodes], edges)
    rows: dict[int, int] = {}
    per_column: dict[int, list[DagNode]] = {}
    for node in nodes:
        per_column.setdefault(columns.get(node.job_id, 0), []).append(node)
    for members in per_column.values():
        for row, node in enumerate(members):
            rows[node.job_id] = row
    width = MARGIN * 2 + (max(per_column, default=0) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = MARGIN * 2 + max((len(m) for m in per_column.values()), default=1) * (NODE_HEIGHT + ROW_GAP)

    def origin(job_id: int) -> tuple[int, int]:
        x = MARGIN + columns.get(job_id, 0) * (NODE_WIDTH + COLUMN_GAP)
        y = MARGIN + rows.get(job_id, 0) * (NODE_HEIGHT + ROW_GAP)
        return x, y

    parts = [
        Markup(
            '<svg class="dag" role="img" aria-labelledby="dag-title" width="{w}" height="{h}" '
            'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">'
            '<title id="dag-title">{t}</title>'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>'
        ).format(w=width, h=height, t=title)
    ]
    for source, target in edges:
        sx, sy = origin(source)
        tx, ty = origin(target)
        x1, y1 = sx + NODE_WIDTH, sy + NODE_HEIGHT // 2
        x2, y2 = tx, ty + NODE_HEIGHT // 2
        mid = (x1 + x2) // 2
        parts.append(
            Markup('<path class="edge" d="M {} {} C {} {}, {} {}, {} {}" marker-end="url(#arrow)"/>').format(
                x1, y1, mid, y1, mid, y2, x2, y2
            )
        )
    for node in nodes:
        x, y = origin(node.job_id)
        label = node.name if len(node.name) <= 22 else node.name[:21] + "…"
        body = Markup(
            '<g class="node {cls}" data-job-id="{id}" data-status="{status}">'
            "<title>{name} (job {id}): {status}</title>"
            '<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8"/>'
            '<text x="{tx}" y="{ty1}">{label}</text>'
            '<text class="sub" x="{tx}" y="{ty2}">job {id} · {status}</text></g>'
        ).format(
            cls=status_class(node.status),
            id=node.job_id,
            status=status_name(node.status),
            name=node.name,
            x=x,
            y=y,
            w=NODE_WIDTH,
            h=NODE_HEIGHT,
            tx=x + 10,
            ty1=y + 20,
            ty2=y + 38,
            label=label,
        )
        if node.href:
            body = Markup('<a href="{}">{}</a>').format(node.href, body)
        parts.append(body)
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
