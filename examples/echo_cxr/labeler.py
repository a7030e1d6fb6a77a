"""Rule-based report labeler: 14 CheXpert observations plus the synthetic generator's findings.

Each finding comes out positive (1), negative (0), uncertain (-1) or not mentioned (None),
CheXpert's convention. English and Chinese. Rules, in order:

1. normalise (lower case, abbreviations such as RUL / PTX / ETT / R / L expanded);
2. split into sentences, then clauses (``but``, ``however``, ``there is``, ``and a``, ... end
   a negation scope; commas and ``or`` do not, so "no effusion, pneumothorax or edema" negates
   all three);
3. find mentions with per-finding patterns; some patterns state absence by themselves
   ("heart size is normal", "costophrenic angle is sharp", "lungs are clear", "肺野清晰");
4. a mention's status comes from the nearest negation or uncertainty cue before it in its
   clause (pseudo-negations such as "no change in" are masked first, so "no change in
   cardiomegaly" stays positive), or a cue right after it ("is not seen", "cannot be excluded",
   "has resolved", "可能");
5. side ("left", "right", "bilateral", ...) and zone ("upper", "base", ...) come from the words
   just before the mention, the mention itself, or a prepositional phrase after it ("on the
   left", "in the right upper zone");
6. per finding: positive beats uncertain beats negative. A negative with no side (or zone)
   applies to every side (zone); a positive with no side is not lateralised. No Finding is
   positive when no pathology (Support Devices aside) is positive or uncertain.

Usage::

    from examples.echo_cxr.labeler import label_report
    label_report("No pleural effusion or pneumothorax. Cannot exclude pneumonia.")
    # {"Pleural Effusion": 0, "Pneumothorax": 0, "Pneumonia": -1, ...}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from examples.echo_cxr.data.synthetic import FINDINGS as SYNTHETIC_FINDINGS

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
CHEXPERT_FINDINGS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
ALL_FINDINGS: tuple[str, ...] = CHEXPERT_FINDINGS + SYNTHETIC_FINDINGS
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
_SIDES, _ZONES = ("right", "left"), ("upper", "lower")


@dataclass(frozen=True)
class Mention:
    """One finding mention. ``start``/``end`` index the normalised text."""

    finding: str
    status: int
    start: int
    end: int
    text: str
    sides: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()


# ------------------------------------------------------------------ English rules
_ADV = r"(?:(?:not|\w+ly|borderline|top[- ]normal)\s+)*"
_COP = r"(?:(?:is|are|was|were|appears?|remains?|has been|have been)\s+)?"
_EN = [  # (finding, pattern, states absence by itself)
    ("Cardiomegaly", rf"\bcardiomegaly\b|\bcardiac enlargement\b|\benlarged (?:heart|cardiac silhouette)\b"
     rf"|\b(?:heart|cardiac silhouette|cardiac contour|heart size|cardiac size)\s+{_COP}{_ADV}(?:enlarged|large|increased)\b", False),
    ("Cardiomegaly", rf"\b(?:heart|cardiac)(?: size| silhouette| contour)?s?\s+{_COP}(?:normal|within normal limits|unremarkable)\b"
     r"|\bnormal (?:heart|cardiac) (?:size|silhouette)\b", True),
    ("Enlarged Cardiomediastinum", rf"\b(?:widen(?:ed|ing)|enlarged?(?:ment)?)(?: of the)? (?:cardio)?mediastin\w*"
     rf"|\b(?:cardio)?mediastin\w*(?: silhouette| contour)?s?\s+{_COP}{_ADV}(?:widened|enlarged|prominent)\b", False),
    ("Enlarged Cardiomediastinum", rf"\b(?:cardio)?mediastinal (?:silhouette|contour)s?\s+{_COP}(?:normal|within normal limits|unremarkable)\b"
     r"|\bnormal (?:cardio)?mediastinal (?:silhouette|contour)s?\b", True),
    ("Lung Opacity", r"\bopaci(?:ty|ties|fication|fications)\b|\binfiltrat(?:e|es|ion|ive)\b|\bdensit(?:y|ies)\b"
     r"|\bairspace (?:disease|process)\b|\bhaz(?:y|iness)\b|\bground[- ]glass\b", False),
    ("Lung Opacity", rf"\b(?:(?:right|left|bilateral)\s+)?(?:(?:upper|lower|mid)\s+)?(?:lungs?|zones?|lung bases?|bases|lung fields?)\s+"
     rf"{_COP}(?:otherwise\s+)?clear\b|\bclear lungs\b", True),
    ("Lung Lesion", r"\bnodul(?:e|es|ar)\b|\bmass(?:es)?\b|\blesions?\b|\btumou?rs?\b|\bneoplasm\w*|\bcarcinoma\b"
     r"|\bmetasta\w*|\bcavita(?:ry|tion)\b", False),
    ("Edema", r"\bo?edema\b|\b(?:pulmonary|vascular) congestion\b|\b(?:congestive )?heart failure\b|\bfluid overload\b", False),
    ("Consolidation", r"\bconsolidat\w*", False),
    ("Pneumonia", r"\b(?:broncho)?pneumoni\w*|\binfecti\w*", False),
    ("Atelectasis", r"\batelecta\w*|\b(?:lobar|segmental) collapse\b", False),
    ("Pneumothorax", r"\bpneumothora(?:x|ces)\b|\bpleural air\b", False),
    ("Pleural Effusion", rf"(?<!pericardial )\b(?:pleural )?effusions?\b|\bpleural fluid\b|\bhydrothorax\b"
     rf"|\bcostophrenic angles?\s+{_COP}{_ADV}blunt\w*|\bblunt\w*(?: of)?(?: the)?(?: (?:left|right|bilateral))? costophrenic angles?\b", False),
    ("Pleural Effusion", rf"\bcostophrenic angles?\s+{_COP}(?:sharp|clear|preserved|normal)\b|\bsharp costophrenic angles?\b", True),
    ("Pleural Other", r"\bpleural (?:thickening|scarring|plaques?|calcification)\b|\bfibrothorax\b", False),
    ("Fracture", r"\bfractur\w*|\bfx\b", False),
    ("Support Devices", r"\b(?:endotracheal|enteric|nasogastric|orogastric|feeding|chest|tracheostomy|et|ng|og) tubes?\b"
     r"|\btubes? (?:and|or) lines?\b|\blines? (?:and|or) tubes?\b|\b(?:central venous|central|picc|ij|subclavian|arterial) (?:line|catheter)s?\b"
     r"|\bcatheters?\b|\bpace(?:maker|r)s?\b|\b(?:aicd|icd)\b|\bdefibrillator\b|\bsupport devices?\b|\bsternotomy wires?\b"
     r"|\bsurgical clips?\b|\bstents?\b|\bdrains?\b", False),
]
_EN_UNC = re.compile(
    r"\b(?:cannot|can not|can't|could not|may not) (?:be )?(?:exclude[d]?|rule[d]? out)\b|\bnot (?:be )?excluded\b"
    r"|\b(?:possible|possibly|probable|probably|likely|questionable|equivocal|borderline|suspected|suspicious"
    r"|suspect|presumed|indeterminate|differential|versus|vs|may|might|could)\b|\b(?:concern|concerning) for\b"
    r"|\bquestion of\b|\brule out\b|\bevaluate for\b|\bsuggest\w*"
)
_EN_NEG = re.compile(
    r"\bno\b|\bnot\b|\bwithout\b|\bnegative for\b|\bfree of\b|\babsence of\b|\babsent\b|\bresolved\b"
    r"|\bresolution of\b|\bclear of\b|\bnor\b|\bneither\b|\bremoved\b|\bremoval of\b|\bexcluded\b|\bruled out\b"
)
_EN_PSEUDO = re.compile(  # look like negations but do not negate what follows
    r"\bno (?:(?:significant|interval|appreciable|substantial|definite)\s+)*(?:change|increase|decrease|worsening|improvement|progression)\b"
    r"|\bnot (?:significantly )?(?:changed|increased|improved)\b|\bwithout (?:interval )?change\b|\bto (?:suggest|indicate)\b"
)
_EN_POST_UNC = re.compile(
    rf"^\s*{_COP}(?:(?:cannot|can not|could not|may not)\s+be\s+(?:excluded|ruled out)|not\s+(?:be\s+)?(?:excluded|ruled out)"
    r"|possible\b|suspected\b|questioned\b|likely\b|probable\b)|^\s*(?:may|might|could)\s+be\s+present|^\s*\?"
)
_EN_POST_NEG = re.compile(
    r"^\s*(?:(?:is|are|was|were|has|have|had)\s+)?(?:been\s+)?(?:\w+ly\s+)?"
    r"(?:not\s+(?:seen|present|identified|visuali[sz]ed|appreciated|evident|demonstrated|detected|noted|visible)"
    r"|absent|resolved|removed|ruled out|excluded|no longer\b)"
)
_EN_CLAUSE = re.compile(
    r"\b(?:but|however|although|though|whereas|while|yet|except|apart from|aside from|other than)\b"
    r"|\bthere (?:is|are)\b|\band (?:a|an|the|there)\b"
)
_EN_BOUNDARY = re.compile(r",|\band\b|\bor\b|\bwith\b|\bnor\b")
_EN_PREP = re.compile(
    r"^\s*(?:(?:is|are)\s+(?:seen|present|noted)\s+)?(?:in|at|on|over|within|involving|overl(?:ies|ying)|projects? over|projecting over)\s+"
)
_EN_SIDE = {"left": {"left"}, "right": {"right"}, "bilateral": {"left", "right"}, "both": {"left", "right"},
            "bibasilar": {"left", "right"}, "bibasal": {"left", "right"}, "bases": {"left", "right"}, "apices": {"left", "right"}}
_EN_ZONE = {"upper": "upper", "apex": "upper", "apical": "upper", "apices": "upper", "lower": "lower", "base": "lower",
            "bases": "lower", "basal": "lower", "basilar": "lower", "bibasilar": "lower", "bibasal": "lower"}
_EN_ABBREV = [
    (r"\b(?:findings|impression|history|comparison|indication)\s*:", ". "),
    (r"\br/o\b", "rule out"), (r"\bb/l\b|\bbilat\b", "bilateral"),
    (r"\brul\b", "right upper lobe"), (r"\brll\b", "right lower lobe"), (r"\brml\b", "right middle lobe"),
    (r"\blul\b", "left upper lobe"), (r"\blll\b", "left lower lobe"),
    (r"\bptx\b", "pneumothorax"), (r"\bett\b", "endotracheal tube"), (r"\bngt\b|\bng tube\b", "nasogastric tube"),
    (r"\bcp angles?\b", "costophrenic angle"), (r"\bchf\b", "congestive heart failure"),
    (r"\br\b", "right"), (r"\bl\b", "left"), (r"/", " and "), (r"\b(left|right)[- ]sided\b", r"\1"),
    (r"\b(?:left and right|right and left)\b", "bilateral"), (r"\b(upper|lower) and (upper|lower)\b", r"\1 \2"),
]


def _normalise_en(text: str) -> str:
    text = text.lower()
    for pattern, repl in _EN_ABBREV:
        text = re.sub(pattern, repl, text)
    return text


# ------------------------------------------------------------------ Chinese rules
_ZH = [
    ("Cardiomegaly", r"(?:心影|心脏)(?:明显|稍|略|轻度|中度|显著)?(?:增大|扩大|肥大)", False),
    ("Cardiomegaly", r"(?:心影|心脏)(?:大小)?(?:正常|不大)|心胸比(?:例)?正常", True),
    ("Enlarged Cardiomediastinum", r"纵隔(?:影)?(?:未见|无)?增宽", False),
    ("Lung Opacity", r"斑片(?:状)?影|片状影|密度增高影?|高密度影|异常密度影|渗出影?|模糊影|阴影|浸润影?|磨玻璃影?", False),
    ("Lung Opacity", r"[左右双两]?[上中下]?肺野?(?:纹理)?清晰", True),
    ("Lung Lesion", r"结节|肿块|占位|肿瘤", False),
    ("Edema", r"水肿|肺淤血", False),
    ("Consolidation", r"实变", False),
    ("Pneumonia", r"肺炎|感染", False),
    ("Atelectasis", r"肺不张", False),
    ("Pneumothorax", r"气胸", False),
    ("Pleural Effusion", r"(?<!心包)积液|肋膈角(?:变钝|模糊|消失)", False),
    ("Pleural Effusion", r"肋膈角(?:锐利|清晰|正常)", True),
    ("Pleural Other", r"胸膜(?:增厚|粘连|钙化)", False),
    ("Fracture", r"骨折", False),
    ("Support Devices", r"气管插管|插管|胃管|导管|管线|起搏器|支持装置|引流管|置管", False),
]
_ZH_UNC = re.compile(r"不除外|不能除外|不能排除|不排除|待排除?|待除外|可能|考虑|疑似|可疑|疑为|倾向|？|\?")
_ZH_NEG = re.compile(r"未见|未发现|未显示|没有|无|未|不伴|不见|否认|排除|已吸收|消失")
_ZH_PSEUDO = re.compile(r"不规则|不均匀?|不清|无明显变化|未见明显变化|无变化")
_ZH_POST_UNC = re.compile(r"^(?:可能|待排|不除外|？|\?)")
_ZH_POST_NEG = re.compile(r"^(?:已)?(?:吸收|消失|消退)")
_ZH_CLAUSE = re.compile(r"[，,]|但是?|然而")
_ZH_BOUNDARY = re.compile(r"[及和与或、]")


def _language(text: str) -> str:
    return "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en"


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    """Blank out matches, keeping offsets."""
    return pattern.sub(lambda m: " " * len(m.group()), text)


def _spans(text: str, pattern: re.Pattern[str] | str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(pattern, text)]


def _clauses(sentence: str, clause_re: re.Pattern[str]) -> list[tuple[int, int]]:
    cuts = [0] + [m.start() for m in clause_re.finditer(sentence)] + [len(sentence)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _cue_status(clause: str, start: int, end: int, zh: bool, states_absence: bool) -> int:
    """Status from the nearest cue before ``end`` (cues inside the mention count) or right after it."""
    pseudo, unc, neg = (_ZH_PSEUDO, _ZH_UNC, _ZH_NEG) if zh else (_EN_PSEUDO, _EN_UNC, _EN_NEG)
    text = _mask(clause, pseudo)
    cues = [(s, UNCERTAIN) for s, _ in _spans(text[:end], unc)]
    text = _mask(text, unc)  # "cannot exclude" must not also read as "not"
    cues += [(s, NEGATIVE) for s, _ in _spans(text[:end], neg)]
    after = clause[end:]
    if (_ZH_POST_UNC if zh else _EN_POST_UNC).match(after):
        return UNCERTAIN
    if cues:
        _, kind = max(cues)
        if not states_absence or kind == UNCERTAIN:
            return kind
    if states_absence or (_ZH_POST_NEG if zh else _EN_POST_NEG).match(after):
        return NEGATIVE
    return POSITIVE


def _side_zone(window: str, zh: bool) -> tuple[frozenset[str], frozenset[str]]:
    sides: set[str] = set()
    zones: set[str] = set()
    if zh:
        sides |= {"left"} if "左" in window else set()
        sides |= {"right"} if "右" in window else set()
        sides |= {"left", "right"} if re.search(r"[双两]", window) else set()
        zones |= {"upper"} if re.search(r"上肺|上野|肺尖", window) else set()
        zones |= {"lower"} if re.search(r"下肺|下野|肺底", window) else set()
    else:
        for word in re.findall(r"[a-z]+", window):
            sides |= _EN_SIDE.get(word, set())
            if word in _EN_ZONE:
                zones.add(_EN_ZONE[word])
    return frozenset(sides), frozenset(zones)


def find_mentions(text: str, language: str | None = None) -> list[Mention]:
    """All finding mentions with status, side and zone. ``language``: "en", "zh" or None (auto)."""
    language = language or _language(text)
    if language not in ("en", "zh"):
        raise ValueError(f"language={language!r}; expected 'en', 'zh' or None (auto)")
    zh = language == "zh"
    norm = text if zh else _normalise_en(text)
    rules = _ZH if zh else _EN
    sentence_re = r"[^。；;！!？?\n]+[？?]?" if zh else r"(?:[^.;!?\n]|(?<=\d)\.(?=\d))+\??"
    out: list[Mention] = []
    for sm in re.finditer(sentence_re, norm):
        for ca, cb in _clauses(sm.group(), _ZH_CLAUSE if zh else _EN_CLAUSE):
            base = sm.start() + ca
            clause = norm[base : sm.start() + cb]
            found: list[tuple[int, int, str, bool]] = []
            for finding, pattern, absent in rules:
                for s, e in _spans(clause, pattern):
                    if any(f == finding and s < e2 and s2 < e for s2, e2, f, _ in found):
                        continue  # overlapping mention of the same finding: keep the first (rules list the specific ones first)
                    found.append((s, e, finding, absent))
            found.sort()
            for s, e, finding, absent in found:
                nxt = min([s2 for s2, *_ in found if s2 >= e] + [len(clause)])
                status = _cue_status(clause[:nxt], s, e, zh, absent)
                prev = max([e2 for _, e2, *_ in found if e2 <= s] + [0])
                pre = clause[prev:s]
                cut = [m.end() for m in (_ZH_BOUNDARY if zh else _EN_BOUNDARY).finditer(pre)]
                pre = pre[cut[-1] :] if cut else pre
                pre = pre[-8:] if zh else " ".join(pre.split()[-4:])
                post = clause[e:nxt]
                prep = None if zh else _EN_PREP.match(post)
                post = " ".join(_EN_BOUNDARY.split(post[prep.end() :])[0].split()[:5]) if prep else ""
                sides, zones = _side_zone(f"{pre} {clause[s:e]} {post}", zh)
                out.append(Mention(finding, status, base + s, base + e, clause[s:e], sides, zones))
    return out


def _merge(labels: dict[str, int | None], key: str, status: int) -> None:
    old = labels[key]
    if old is None or _RANK[status] > _RANK[old]:
        labels[key] = status


def label_report(text: str, language: str | None = None) -> dict[str, int | None]:
    """Label one report.

    Returns:
        finding -> 1 (positive), 0 (negative), -1 (uncertain) or None (not mentioned), for
        every name in :data:`ALL_FINDINGS` (CheXpert's 14, then the synthetic findings).
    """
    labels: dict[str, int | None] = dict.fromkeys(ALL_FINDINGS)
    for m in find_mentions(text, language):
        _merge(labels, m.finding, m.status)
        # A negative without side/zone covers every side/zone; a positive must say where.
        sides = m.sides or (frozenset(_SIDES) if m.status == NEGATIVE else frozenset())
        zones = m.zones or (frozenset(_ZONES) if m.status == NEGATIVE else frozenset())
        direct = {"Cardiomegaly": "cardiomegaly", "Support Devices": "support_devices", "Pneumothorax": "pneumothorax"}
        if m.finding in direct:
            _merge(labels, direct[m.finding], m.status)
        elif m.finding == "Pleural Effusion":
            for s in sides:
                _merge(labels, f"{s}_pleural_effusion", m.status)
        elif m.finding in ("Lung Opacity", "Consolidation"):
            for s in sides:
                for z in zones:
                    _merge(labels, f"{s}_{z}_opacity", m.status)
    pathologies = [f for f in CHEXPERT_FINDINGS if f not in ("No Finding", "Support Devices")]
    if not any(labels[f] in (POSITIVE, UNCERTAIN) for f in pathologies):
        labels["No Finding"] = POSITIVE
    return labels


def synthetic_labels(text: str, language: str | None = None) -> dict[str, int | None]:
    """Only the synthetic generator's findings, in their order (see :data:`SYNTHETIC_FINDINGS`)."""
    labels = label_report(text, language)
    return {f: labels[f] for f in SYNTHETIC_FINDINGS}
