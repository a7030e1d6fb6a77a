"""Seeded synthetic chest X-rays whose findings are visibly drawn, with matching reports.

For offline runs, tests and the CPU demo. Each sample is a grayscale radiograph-like image
(default 64x64) plus its label vector over :data:`FINDINGS`, a normalised English report
that states every finding as present or absent in a fixed order (2-3 phrasings per
sentence, chosen at random, so the text distribution is multimodal like real reports), the
hand-written Chinese counterpart, and an unnormalised free-text English variant (positives
only, shuffled, abbreviated) for the normalisation ablation.

Usage::

    from examples.echo_cxr.data.synthetic import generate_samples, SyntheticConfig
    samples = generate_samples(100, seed=0, config=SyntheticConfig(image_size=64))
    samples[0].image            # uint8 [64, 64]
    samples[0].labels           # {"support_devices": 0, "cardiomegaly": 1, ...}
    samples[0].report("zh")     # findings + impression, Chinese

Image convention: radiographic, the patient's right is on the image's LEFT.
Determinism: the same seed gives byte-identical images and identical text on any platform
(``numpy.random.Generator`` streams are platform-independent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from examples.echo_cxr.data.records import CXRRecord

FINDINGS: tuple[str, ...] = (
    "support_devices",
    "cardiomegaly",
    "right_upper_opacity",
    "right_lower_opacity",
    "left_upper_opacity",
    "left_lower_opacity",
    "right_pleural_effusion",
    "left_pleural_effusion",
    "pneumothorax",
)
"""The generator's findings, in the fixed order reports state them. ``pneumothorax`` is always
drawn on the patient's right (apical-lateral); all absent = a normal study."""


@dataclass
class SyntheticConfig:
    """How synthetic studies are drawn."""

    image_size: int = 64
    """Side of the square image in pixels (>= 32). 64 matches patch 8 / merge 2 (16 image tokens)."""
    priors: float | dict[str, float] = 0.25
    """Independent probability that each finding is present; a float for all, or per finding
    (missing findings then default to 0.25)."""
    noise_std: float = 0.02
    """Std of additive Gaussian pixel noise, in [0, 1] intensity units."""
    jitter: float = 0.02
    """Max random shift of the anatomy and of each finding, as a fraction of the image side."""
    supersample: int = 2
    """Render at this multiple of ``image_size`` and average down, to anti-alias thin lines."""

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size={self.image_size}; expected >= 32 so findings stay visible")
        if self.supersample < 1:
            raise ValueError(f"supersample={self.supersample}; expected >= 1")
        if not 0.0 <= self.noise_std <= 0.2:
            raise ValueError(f"noise_std={self.noise_std}; expected in [0, 0.2]")
        if not 0.0 <= self.jitter <= 0.05:
            raise ValueError(f"jitter={self.jitter}; expected in [0, 0.05] (larger moves findings across zones)")
        priors = self.priors if isinstance(self.priors, dict) else {}
        unknown = set(priors) - set(FINDINGS)
        if unknown:
            raise ValueError(f"priors has unknown findings {sorted(unknown)}; expected keys from {FINDINGS}")
        for f in FINDINGS:
            p = self.prior(f)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"prior of {f!r} is {p}; expected a probability in [0, 1]")

    def prior(self, finding: str) -> float:
        """Probability that ``finding`` is present."""
        if isinstance(self.priors, dict):
            return float(self.priors.get(finding, 0.25))
        return float(self.priors)


@dataclass
class SyntheticSample:
    """One synthetic study. Invariant: every report states exactly ``labels``."""

    study_id: str
    seed: int
    labels: dict[str, int]
    """Finding -> 0/1, keys in :data:`FINDINGS` order."""
    image: np.ndarray
    """uint8 [H, W] grayscale image."""
    findings: dict[str, str] = field(default_factory=dict)
    """Language ("en"/"zh") -> normalised FINDINGS section."""
    impression: dict[str, str] = field(default_factory=dict)
    """Language -> IMPRESSION section."""
    raw_report: str = ""
    """Unnormalised English free text: positives only, shuffled order, abbreviations."""

    @property
    def label_vector(self) -> tuple[int, ...]:
        """0/1 per finding in :data:`FINDINGS` order."""
        return tuple(self.labels[f] for f in FINDINGS)

    def report(self, language: str = "en") -> str:
        """Findings then impression as one text (sections separated by a space)."""
        return f"{self.findings[language]} {self.impression[language]}"

    def to_pil(self):  # -> PIL.Image.Image
        """The image as a PIL ``L`` (8-bit grayscale) image."""
        from PIL import Image

        return Image.fromarray(self.image)  # uint8 [H, W] -> mode "L"

    def to_record(self, image_paths: list[str], language: str = "en") -> CXRRecord:
        """A :class:`CXRRecord` for this study; labels, seed and raw text go in ``metadata``."""
        return CXRRecord(
            study_id=self.study_id,
            source="synthetic",
            image_paths=list(image_paths),
            findings=self.findings[language],
            impression=self.impression[language],
            language=language,
            metadata={"labels": dict(self.labels), "seed": self.seed, "raw_report": self.raw_report},
        )


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` in a stream started at ``seed`` (independent, reproducible)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def generate_sample(
    seed: int, config: SyntheticConfig | None = None, study_id: str | None = None, with_image: bool = True
) -> SyntheticSample:
    """Draw one study from ``seed``. Same seed and config -> identical image and text.

    ``with_image=False`` skips rendering (``image`` is then empty [0, 0]); labels and text are unchanged.
    """
    config = config or SyntheticConfig()
    # Separate child streams: changing the text templates must not change the images.
    ss_labels, ss_image, ss_en, ss_zh, ss_raw = np.random.SeedSequence(seed).spawn(5)
    rng_labels = np.random.default_rng(ss_labels)
    labels = {f: int(rng_labels.random() < config.prior(f)) for f in FINDINGS}
    image = (render_image(labels, np.random.default_rng(ss_image), config) if with_image
             else np.zeros((0, 0), dtype=np.uint8))
    findings, impression = {}, {}
    for lang, ss in (("en", ss_en), ("zh", ss_zh)):
        rng = np.random.default_rng(ss)
        findings[lang] = render_findings(labels, rng, lang)
        impression[lang] = render_impression(labels, rng, lang)
    raw = render_raw_report(labels, np.random.default_rng(ss_raw))
    return SyntheticSample(
        study_id=study_id or f"syn{seed:010d}",
        seed=seed,
        labels=labels,
        image=image,
        findings=findings,
        impression=impression,
        raw_report=raw,
    )


def generate_samples(
    n: int, seed: int = 0, config: SyntheticConfig | None = None, start: int = 0, with_image: bool = True
) -> list[SyntheticSample]:
    """Samples ``start .. start+n-1`` of the stream ``seed`` (sample i uses ``sample_seed(seed, i)``)."""
    if n < 0:
        raise ValueError(f"n={n}; expected >= 0")
    return [
        generate_sample(sample_seed(seed, i), config, study_id=f"syn{seed}_{i:06d}", with_image=with_image)
        for i in range(start, start + n)
    ]


# ----------------------------------------------------------------------------- rendering
# Geometry in normalised coordinates (u = column / W, v = row / H). Each finding is a large,
# high-contrast pattern at a fixed-ish location, because a tiny CPU-trained VLM has to read it:
#   cardiomegaly        heart ellipse ~1.7x wider (cardiothoracic ratio ~0.45 -> ~0.75)
#   *_upper/lower_opacity  bright round blob in the middle of that lung zone
#   *_pleural_effusion  bright homogeneous base of that hemithorax, meniscus rising laterally
#   pneumothorax        black apical-lateral band of the patient's right lung, no markings,
#                       bordered by a bright visceral pleural line
#   support_devices     very bright lines: ET tube, enteric tube into the stomach, right CVC

_LUNG_CU = {"right": 0.30, "left": 0.70}  # patient right is on the image left
_ZONE_CV = {"upper": 0.33, "lower": 0.53}
_JITTER_KEYS = ("heart", "pneumothorax", "right_effusion", "left_effusion", "tube", "cvc") + tuple(
    f"{s}_{z}_{ax}" for s in ("right", "left") for z in ("upper", "lower") for ax in "uv"
)


def _ellipse(uu: np.ndarray, vv: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse."""
    return ((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2 <= 1.0


def _segment_dist(uu: np.ndarray, vv: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    """Distance of every pixel to the segment p-q (normalised units)."""
    pu, pv = p
    du, dv = q[0] - pu, q[1] - pv
    t = np.clip(((uu - pu) * du + (vv - pv) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(uu - (pu + t * du), vv - (pv + t * dv))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """[size, size] smooth random field in [-1, 1] (bilinear upsampling of a cells x cells grid)."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    x = np.linspace(0, cells, size)
    i = np.minimum(x.astype(int), cells - 1)
    f = x - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def render_image(labels: dict[str, int], rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """Draw the radiograph for ``labels``.

    Returns:
        uint8 [image_size, image_size].
    """
    s = config.image_size * config.supersample
    j = config.jitter
    coords = (np.arange(s) + 0.5) / s
    vv, uu = np.meshgrid(coords, coords, indexing="ij")
    # Global pose jitter: the whole chest moves a little, findings stay in their zones.
    du, dv = rng.uniform(-j, j, 2)
    scale = rng.uniform(0.96, 1.04)
    uu = (uu - 0.5 - du) / scale + 0.5
    vv = (vv - 0.5 - dv) / scale + 0.5

    # Every random number is drawn up front, in a fixed order, so toggling one finding changes
    # only that finding's pixels (the tests rely on this to check each finding is visible).
    jit = dict(zip(_JITTER_KEYS, rng.uniform(-j, j, len(_JITTER_KEYS)).tolist()))
    markings = 0.06 * _smooth_noise(rng, s, 10) + 0.03 * np.sin(2 * np.pi * (vv * 9 + 0.4 * (uu - 0.5) ** 2))
    gain, bias = rng.uniform(0.92, 1.08), rng.uniform(-0.03, 0.03)
    noise = rng.normal(0.0, config.noise_std, (config.image_size, config.image_size))

    img = np.full((s, s), 0.05)
    img[_ellipse(uu, vv, 0.5, 0.58, 0.48, 0.62)] = 0.32  # soft tissue
    lungs = {side: _ellipse(uu, vv, cu, 0.48, 0.155, 0.31) for side, cu in _LUNG_CU.items()}
    lung_any = lungs["right"] | lungs["left"]
    img[lung_any] = 0.20 + markings[lung_any]
    img[(np.abs(uu - 0.5) < 0.07) & (vv < 0.62)] = 0.55  # mediastinum / spine
    img[(np.abs(uu - 0.5) < 0.015) & (vv < 0.36)] = 0.22  # tracheal air column
    img[(vv > 0.78 + 0.05 * np.cos((uu - 0.5) * 6)) & (img > 0.1)] = 0.62  # diaphragm and abdomen

    heart_ru, heart_rv = (0.21, 0.16) if labels["cardiomegaly"] else (0.12, 0.12)
    img[_ellipse(uu, vv, 0.52 + jit["heart"] / 2, 0.67, heart_ru, heart_rv)] = 0.68

    if labels["pneumothorax"]:  # patient right = image left, apical-lateral
        edge_u = 0.235 + jit["pneumothorax"] / 2 + 0.025 * np.sin(vv * 6)
        top = vv < 0.56
        collapsed = lungs["right"] & (uu >= edge_u)
        img[collapsed] += 0.06  # the collapsed lung is a little denser
        img[lungs["right"] & (uu < edge_u) & top] = 0.0  # air without lung markings
        img[lungs["right"] & (np.abs(uu - edge_u) < 0.013) & top] = 0.85  # visceral pleural line

    for side in ("right", "left"):
        if labels[f"{side}_pleural_effusion"]:
            # 0 at the lung centre, 1 at the lateral chest wall (image left for the right lung)
            outward = (_LUNG_CU[side] - uu if side == "right" else uu - _LUNG_CU[side]) / 0.155
            top = 0.66 + jit[f"{side}_effusion"] / 2 - 0.14 * np.clip(outward, 0, 1) ** 2  # meniscus rises laterally
            fluid = _ellipse(uu, vv, _LUNG_CU[side], 0.50, 0.17, 0.34) & (vv > top)
            img[fluid] = 0.78
        for zone, cv in _ZONE_CV.items():
            if labels[f"{side}_{zone}_opacity"]:
                cu, cvj = _LUNG_CU[side] + jit[f"{side}_{zone}_u"], cv + jit[f"{side}_{zone}_v"] / 2
                d2 = ((uu - cu) / 0.08) ** 2 + ((vv - cvj) / 0.075) ** 2
                blob = np.exp(-(d2**2)) * lungs[side]  # flat-topped: uniformly bright core
                img = img * (1.0 - blob) + 0.82 * blob

    if labels["support_devices"]:
        tube_u = 0.5 + jit["tube"] / 3
        d_ett = _segment_dist(uu, vv, (tube_u, -0.05), (tube_u, 0.30))
        d_ng = np.minimum(
            _segment_dist(uu, vv, (tube_u + 0.025, -0.05), (tube_u + 0.03, 0.72)),
            _segment_dist(uu, vv, (tube_u + 0.03, 0.72), (0.64, 0.90)),
        )
        d_cvc = _segment_dist(uu, vv, (0.10, 0.14), (0.45 + jit["cvc"] / 2, 0.31))
        img[np.minimum(np.minimum(d_ett, d_ng), d_cvc) < 0.014] = 1.0

    img = img * gain + bias
    if config.supersample > 1:
        k = config.supersample
        img = img.reshape(config.image_size, k, config.image_size, k).mean(axis=(1, 3))
    img = img + noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- text
# Every normalised sentence has 2-3 phrasings with the same meaning, so that a
# one-step-per-block student faces a genuinely multimodal target (DESIGN.md §4). The
# labeler (examples/echo_cxr/labeler.py) must map every phrasing back to its label; the
# tests check that over many seeds.
_SIDES = ("right", "left")
_ZONES = ("upper", "lower")
_EN_ZONE = {"upper": ("upper zone", "upper lung"), "lower": ("lower zone", "lung base")}
_ZH_ZONE = {"right": "右", "left": "左", "upper": "上肺野", "lower": "下肺野"}
_ZH_SIDE = {"right": "右侧", "left": "左侧"}

_EN = {
    "support_devices": (
        ("An endotracheal tube and enteric tube are present.", "Support devices are in standard position.",
         "Lines and tubes are in expected position."),
        ("No support devices are present.", "There are no lines or tubes.", "No tubes or lines are seen."),
    ),
    "cardiomegaly": (
        ("The heart is enlarged.", "There is cardiomegaly.", "The cardiac silhouette is enlarged."),
        ("The heart size is normal.", "The cardiac silhouette is within normal limits.", "No cardiomegaly."),
    ),
    "opacity": (
        ("There is an opacity in the {s} {z}.", "{S} {z} consolidation is present.",
         "A focal opacity overlies the {s} {z}."),
        ("The {s} {z} is clear.", "No opacity in the {s} {z}.", "There is no {s} {z} consolidation."),
    ),
    "effusion": (
        ("There is a {s} pleural effusion.", "The {s} costophrenic angle is blunted.",
         "A {s}-sided pleural effusion is present."),
        ("No pleural effusion on the {s}.", "The {s} costophrenic angle is sharp.",
         "There is no {s} pleural effusion."),
    ),
    "pneumothorax": (
        ("There is a right pneumothorax.", "A right apical pneumothorax is seen.",
         "A right-sided pneumothorax is present."),
        ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."),
    ),
}
_ZH = {
    "support_devices": (("可见气管插管及胃管影。", "体内可见支持装置。", "可见管线影。"),
                        ("未见支持装置。", "无管线影。", "未见插管影。")),
    "cardiomegaly": (("心影增大。", "心脏明显增大。", "可见心影扩大。"), ("心影大小正常。", "心脏不大。", "未见心影增大。")),
    "opacity": (("{z}可见斑片影。", "{z}见实变影。", "{z}密度增高。"), ("{z}清晰。", "{z}未见实变。", "{z}无异常密度影。")),
    "effusion": (("{s}胸腔积液。", "{s}肋膈角变钝。", "可见{s}胸腔积液。"),
                 ("{s}肋膈角锐利。", "未见{s}胸腔积液。", "{s}无胸腔积液。")),
    "pneumothorax": (("右侧气胸。", "可见右侧气胸。", "右侧可见气胸线。"), ("未见气胸。", "无气胸。", "未见气胸征象。")),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _slots(labels: dict[str, int]) -> list[tuple[str, str, str, str]]:
    """(label key, template key, side, zone) in the fixed reporting order."""
    out = [("support_devices", "support_devices", "", ""), ("cardiomegaly", "cardiomegaly", "", "")]
    out += [(f"{s}_{z}_opacity", "opacity", s, z) for s in _SIDES for z in _ZONES]
    out += [(f"{s}_pleural_effusion", "effusion", s, "") for s in _SIDES]
    out.append(("pneumothorax", "pneumothorax", "", ""))
    assert [k for k, *_ in out] == list(FINDINGS), "reporting order must follow FINDINGS"
    return out


def render_findings(labels: dict[str, int], rng: np.random.Generator, language: str) -> str:
    """The normalised FINDINGS section: one sentence per finding, in :data:`FINDINGS` order."""
    table = {"en": _EN, "zh": _ZH}[language]
    sentences = []
    for key, tmpl, side, zone in _slots(labels):
        text = _pick(rng, table[tmpl][0 if labels[key] else 1])
        if language == "en":
            z = _pick(rng, _EN_ZONE[zone]) if zone else ""
            text = text.format(s=side, S=side.capitalize(), z=z)
        else:
            z = _ZH_ZONE[side] + _ZH_ZONE[zone] if zone else ""
            text = text.format(s=_ZH_SIDE.get(side, ""), z=z)
        sentences.append(text)
    return ("" if language == "zh" else " ").join(sentences)


def render_impression(labels: dict[str, int], rng: np.random.Generator, language: str) -> str:
    """The IMPRESSION: positives, most urgent first, or a normal statement."""
    en = language == "en"
    items: list[str] = []
    if labels["pneumothorax"]:
        items.append(_pick(rng, ("Right pneumothorax.", "Right apical pneumothorax.") if en else ("右侧气胸",)))
    eff = [s for s in _SIDES if labels[f"{s}_pleural_effusion"]]
    if len(eff) == 2:
        items.append(_pick(rng, ("Bilateral pleural effusions.", "Bilateral effusions.") if en else ("双侧胸腔积液",)))
    elif eff:
        s = eff[0]
        items.append(_pick(rng, (f"{s.capitalize()} pleural effusion.", f"{s.capitalize()} effusion.")) if en
                     else f"{_ZH_SIDE[s]}胸腔积液")
    opac = [(s, z) for s in _SIDES for z in _ZONES if labels[f"{s}_{z}_opacity"]]
    if len(opac) >= 3:  # one phrase keeps the report under 80 words
        items.append(_pick(rng, ("Multifocal opacities.", "Multifocal airspace disease.") if en else ("双肺多发斑片影",)))
    else:
        for s, z in opac:
            if en:
                zone = _pick(rng, _EN_ZONE[z])
                items.append(_pick(rng, (f"{s.capitalize()} {zone} opacity.", f"{s.capitalize()} {zone} consolidation.")))
            else:
                items.append(_ZH_ZONE[s] + _ZH_ZONE[z] + _pick(rng, ("斑片影", "实变")))
    if labels["cardiomegaly"]:
        items.append(_pick(rng, ("Cardiomegaly.", "Enlarged heart.") if en else ("心影增大", "心脏增大")))
    if labels["support_devices"]:
        items.append(_pick(rng, ("Support devices in place.", "Lines and tubes in place.") if en
                           else ("支持装置在位", "管线在位")))
    if len(items) == labels["support_devices"]:  # nothing but (maybe) devices
        normal = ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.")
        if not items:
            normal += ("Normal chest radiograph.",)
        items.append(_pick(rng, normal) if en else _pick(rng, ("心肺未见明显异常", "胸部未见急性病变")))
    if en:
        return " ".join(items)
    return "；".join(i.rstrip("。") for i in items) + "。"


_RAW = {
    "support_devices": ("ETT and NGT in place.", "Tubes and lines in place."),
    "cardiomegaly": ("Cardiomegaly.", "Enlarged heart.", "Heart enlarged."),
    "right_upper_opacity": ("RUL opacity.", "R upper zone opacity.", "Right apical consolidation."),
    "right_lower_opacity": ("RLL opacity.", "R base opacity.", "Right basilar consolidation."),
    "left_upper_opacity": ("LUL opacity.", "L upper zone opacity.", "Left apical consolidation."),
    "left_lower_opacity": ("LLL opacity.", "L base opacity.", "Left basilar consolidation."),
    "right_pleural_effusion": ("R effusion.", "Small R pleural effusion.", "Blunted R CP angle."),
    "left_pleural_effusion": ("L effusion.", "Small L pleural effusion.", "Blunted L CP angle."),
    "pneumothorax": ("R PTX.", "Small right apical PTX.", "Right pneumothorax."),
}


def render_raw_report(labels: dict[str, int], rng: np.random.Generator) -> str:
    """Unnormalised free text: positives only, in random order, abbreviated."""
    items = [_pick(rng, _RAW[f]) for f in FINDINGS if labels[f]]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    if sum(labels.values()) == labels["support_devices"]:
        items.append(_pick(rng, ("Lungs clear. No acute process.", "No acute cardiopulmonary process.", "Unremarkable.")))
    return " ".join(items)
