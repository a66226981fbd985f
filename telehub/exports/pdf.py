"""The report as a PDF for people: reading facility header, patient, study, text, signatures.

Fonts: a CJK TrueType font installed on the hub (Debian's fonts-wqy-zenhei, -microhei, or
fonts-droid-fallback) is embedded (subset), so the PDF looks the same on any device, printers
and phones included. Without one, reportlab's Adobe CID font STSong-Light (its metrics ship
with reportlab; the glyphs come from the viewer, as for any CID font): Chinese text still
renders in common viewers and stays extractable, with nothing to install beyond reportlab.
"""

from __future__ import annotations

import functools
import io
import os
from datetime import datetime
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from telehub.exports.document import ReportDocument

#: TrueType CJK fonts embedded when present (OpenType/CFF fonts such as Noto CJK's .otc cannot
#: be embedded by reportlab).
EMBEDDABLE_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
CID_FONT = "STSong-Light"


EMBEDDED_NAME = "TelehubCJK"


def _embeddable() -> str | None:
    return next((path for path in EMBEDDABLE_FONTS if os.path.exists(path)), None)


#: Chosen at import by a file check only; the font itself (megabytes) is loaded on the first
#: PDF, so hub processes that never render one do not carry it.
FONT = EMBEDDED_NAME if _embeddable() else CID_FONT


@functools.cache
def ensure_font() -> None:
    """Register FONT with reportlab, once per process, before anything is drawn with it."""
    if FONT == CID_FONT:
        pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
        return
    path = _embeddable()
    assert path is not None
    pdfmetrics.registerFont(TTFont(EMBEDDED_NAME, path, subfontIndex=0))


STATUS_LABEL = {
    "preliminary": "初步报告 Preliminary (未审核 not signed)",
    "final": "正式报告 Final (已签发 signed)",
    "addendum": "补充报告 Addendum",
}
SEX_LABEL = {"M": "男 Male", "F": "女 Female", "O": "其他 Other"}


def _style(name: str, size: float, **kw: object) -> ParagraphStyle:
    return ParagraphStyle(
        name, fontName=FONT, fontSize=size, leading=size * 1.45, wordWrap="CJK", **kw
    )


TITLE = _style("title", 16, alignment=TA_CENTER)
SUBTITLE = _style("subtitle", 10.5, alignment=TA_CENTER, textColor=colors.HexColor("#444444"))
HEADING = _style("heading", 11.5, spaceBefore=6, spaceAfter=2)
BODY = _style("body", 10.5)
SMALL = _style("small", 8.5, textColor=colors.HexColor("#555555"))
#: Labels wrap at spaces only, so "Study date" never splits inside a word.
LABEL = ParagraphStyle("label", parent=SMALL, wordWrap=None)


def _p(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def local_time(at: datetime, timezone: str) -> str:
    """A timestamp in the reading centre's time zone, with its UTC offset."""
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError):
        zone = ZoneInfo("Asia/Shanghai")
    local = at.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} (UTC{offset[:3]}:{offset[3:]})"


def person_name(value: str) -> str:
    """A DICOM person name for reading: components spaced, groups joined ("张^三" -> "张 三")."""
    groups = [" ".join(c for c in g.split("^") if c) for g in value.split("=")]
    return " = ".join(g for g in groups if g)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def _grid(rows: list[tuple[str, str, str, str]]) -> Table:
    data = [[_p(a, LABEL), _p(b), _p(c, LABEL), _p(d)] for a, b, c, d in rows]
    table = Table(data, colWidths=[31 * mm, 54 * mm, 31 * mm, 54 * mm])
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
                ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f0f0f0")),
                ("BACKGROUND", (2, 0), (2, -1), colors.HexColor("#f0f0f0")),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    return table


def _patient_and_study(doc: ReportDocument) -> Table:
    study = doc.studies[0] if doc.studies else None
    patient_id = doc.patient_id + (f" ({doc.patient_issuer})" if doc.patient_issuer else "")
    rows = [
        (
            "姓名 Patient",
            person_name(doc.patient_name) or "-",
            "患者编号 Patient ID",
            patient_id or "-",
        ),
        (
            "性别 Sex",
            SEX_LABEL.get(doc.patient_sex, doc.patient_sex or "-"),
            "出生日期 Birth date",
            _date(doc.patient_birth_date) or "-",
        ),
        ("送检机构 Origin", doc.origin_facility, "病例号 Case", f"{doc.case_id}"),
    ]
    if study is not None:
        rows += [
            (
                "检查日期 Study date",
                _date(study.date) or "-",
                "检查类型 Modality",
                ", ".join(m for m in study.modalities if m != "SR") or "-",
            ),
            (
                "检查描述 Description",
                study.description or "-",
                "检查号 Accession",
                study.accession or "-",
            ),
        ]
    else:
        kind = "心电图 ECG" if doc.case_kind == "ecg" else doc.case_kind
        rows.append(("检查类型 Kind", kind, "", ""))
    return _grid(rows)


def _body(doc: ReportDocument) -> list[object]:
    flow: list[object] = []
    if doc.clinical_question:
        flow += [_p("临床问题 Clinical question", HEADING), _p(doc.clinical_question)]
    if doc.sections:
        for section in doc.sections:
            flow += [_p(section.title, HEADING), _p(section.text)]
    else:
        flow += [_p("报告 Report", HEADING), _p(doc.text)]
    for addendum in doc.addenda:
        when = local_time(addendum.at, doc.timezone)
        flow += [
            _p(f"补充报告 Addendum (第 {addendum.version} 版 version {addendum.version})", HEADING),
            _p(addendum.text),
            _p(f"{addendum.author.name} | {when}", SMALL),
        ]
    return flow


def _signatures(doc: ReportDocument) -> Table:
    signed = local_time(doc.signed_at, doc.timezone) if doc.base_status != "preliminary" else "-"
    rows = [
        ("报告医生 Reader", f"{doc.author.name}", "签发时间 Signed", signed),
        (
            "状态 Status",
            STATUS_LABEL.get(doc.status, doc.status),
            "版本 Version",
            f"第 {doc.version} 版 v{doc.version}"
            + (" | 补充报告 addendum" if doc.is_addendum else ""),
        ),
    ]
    if doc.is_addendum:
        rows.append(
            (
                "补充时间 Added",
                local_time(doc.created_at, doc.timezone),
                "原报告 Report",
                f"第 {doc.base_version} 版 v{doc.base_version}",
            )
        )
    for c in doc.cosignatures:
        text = f"{c.by.name} ({c.by.facility})" + (f": {c.comment}" if c.comment else "")
        when = local_time(c.at, doc.timezone)
        rows.append(("会签 Co-signed", text, "会签时间 Co-signed at", when))
    if not doc.cosignatures:
        rows.append(("会签 Co-signed", "-", "", ""))
    return _grid(rows)


def render(doc: ReportDocument) -> bytes:
    ensure_font()
    """The PDF bytes of one report version."""
    out = io.BytesIO()
    title = f"诊断报告 Report | {doc.reading_facility} | case {doc.case_id} v{doc.version}"
    pdf = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=title,
        author=doc.author.name,
        subject=STATUS_LABEL.get(doc.status, doc.status),
        creator="telehub",
        lang="zh-CN",
    )
    ecg = doc.case_kind == "ecg"
    heading = "心电图诊断报告 ECG Report" if ecg else "影像诊断报告 Imaging Report"
    flow: list[object] = [
        _p(doc.reading_facility, TITLE),
        _p(doc.reading_centre, SUBTITLE),
        Spacer(1, 3 * mm),
        _p(f"{heading} | {STATUS_LABEL.get(doc.status, doc.status)}", SUBTITLE),
        Spacer(1, 4 * mm),
        _patient_and_study(doc),
        Spacer(1, 3 * mm),
        *_body(doc),
        Spacer(1, 6 * mm),
        _signatures(doc),
    ]

    def footer(canvas: Canvas, _doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.drawString(
            20 * mm,
            10 * mm,
            f"{doc.reading_facility_code} | 病例 case {doc.case_id} | v{doc.version} | "
            f"第 {canvas.getPageNumber()} 页 page {canvas.getPageNumber()}",
        )
        canvas.restoreState()

    pdf.build(flow, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
