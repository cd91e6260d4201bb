"""Published numbers to aim at: the one place that holds them (the report prints them beside ours; the README
copies this table). Only figures read in a source named here, never typed from memory; most are secondary (a
third party quoting the paper), which each row says. MAGIC's own row stays empty until someone who can read the
paper's tables fills in ``MAGIC`` below, with the table and row it came from.

Searched 2026-12-07: MAGIC's tables are not public beyond its abstract (the authors' repository Wh2018/MAGIC has
no results table; the publisher's page, LNAI 14945, doi 10.1007/978-3-031-70362-1_13, shows the abstract only;
no citing paper found copies its row).
"""
from __future__ import annotations

from dataclasses import dataclass, field

AUDIT = "GitHub AllenLi441/mental-health-llm-eval"
PRIMARY_AUDIT = (f"{AUDIT}, reports/esconv_literature_primary_source_audit_20260811.md, section on MultiESC, the table "
                 "of the paper's strategy results (the audit read the official PDF; it gives no table number)")
CAUSAL_ESC_QUOTE = (f"{AUDIT}, reports/three_benchmark_latest_models_and_dual_track_protocol_20260806.md, quoting "
                    "Table 2 of Causal-ESC (ACL 2026), which copies MultiESC's row")
MULTIESC_DIFFERS = ("same 910/195/195 dialogue split as MAGIC; another system (lookahead strategy planning); per "
                    "the audit its label set merges Providing Suggestions and Information, takes Greeting out of "
                    "Others and leaves the remaining Others out of planning; which test turns it scores, and its "
                    "metric implementation, are not stated in the sources read (ours: the 195 released test "
                    "samples, nlg-eval x100)")


@dataclass(frozen=True)
class Anchor:
    system: str
    paper: str               # where the system is described
    values: dict[str, float] = field(default_factory=dict)  # metric name as the report prints it -> %
    source: str = ""         # where the figures were read: repository, file, table, row
    differs: str = ""        # what differs from this reproduction's setting
    missing: str = ""        # why there are no figures (an empty row)


MAGIC = Anchor("MAGIC (the paper)", "ECML-PKDD 2024, LNAI 14945", {},
               missing="not public: its tables are not reachable beyond the abstract; add them in "
                       "src/magic/study/anchors.py when you have them")

ANCHORS: tuple[Anchor, ...] = (
    MAGIC,
    Anchor("MultiESC", "Cheng et al., EMNLP 2022", {"accuracy": 42.01, "weighted-F1": 34.01}, PRIMARY_AUDIT,
           MULTIESC_DIFFERS),
    Anchor("MultiESC w/o lookahead", "Cheng et al., EMNLP 2022", {"accuracy": 38.76, "weighted-F1": 30.21},
           PRIMARY_AUDIT, MULTIESC_DIFFERS),
    Anchor("BlenderBot-Joint (as reported by MultiESC)", "Cheng et al., EMNLP 2022",
           {"accuracy": 29.92, "weighted-F1": 29.56}, PRIMARY_AUDIT, MULTIESC_DIFFERS),
    Anchor("MultiESC (generation)", "Cheng et al., EMNLP 2022",
           {"BLEU-2": 9.18, "BLEU-4": 3.09, "ROUGE-L": 20.41, "METEOR": 8.84, "Distinct-1": 5.34, "Distinct-2": 25.90},
           CAUSAL_ESC_QUOTE, MULTIESC_DIFFERS),
)


def anchor_lines(anchors: tuple[Anchor, ...] = ANCHORS) -> list[str]:
    """The anchors as a Markdown table (system, figures, where they were read, what differs), each distinct
    source and difference written once below it, for the report and the README."""
    notes: list[str] = []

    def ref(text: str) -> str:
        if not text:
            return "—"
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    rows = ["| system (the row read) | figures (%) | read in | what differs |", "|---|---|---|---|"]
    for a in anchors:
        figures = ", ".join(f"{k} {v:.2f}" for k, v in a.values.items()) or f"— ({a.missing})"
        rows.append(f"| {a.system} ({a.paper}) | {figures} | {ref(a.source)} | {ref(a.differs)} |")
    return rows + [""] + [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
