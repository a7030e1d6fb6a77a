"""The released ECHO's conventions (midea-ai/ECHO) in the lingshu7b configs, checked token by token
through the real Qwen tokenizer; ECHO's JSON records in and out."""

import json
import math
from pathlib import Path

import pytest
from transformers import Qwen2_5_VLConfig

from examples.echo_cxr.config import load_echo_config
from examples.echo_cxr.data.dataset import read_records
from examples.echo_cxr.data.echo_json import echo_dict, read_echo_records, write_echo_records
from examples.echo_cxr.data.processor import format_report, split_report
from examples.echo_cxr.data.records import CXRRecord
from examples.echo_cxr.data.synthetic import generate_sample
from examples.echo_cxr.data.tokenizer import load_qwen_tokenizer
from examples.echo_cxr.workspace import build_processor

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "echo_cxr" / "configs"

# The release's strings, typed here as the issue and midea-ai/ECHO's eval/EasyEval/config.py give them.
ECHO_EN = "Review this chest X-ray and write a report. Use this format: Findings: {}, Impression: {}."
ECHO_ZH = "这是一组胸部X光图像，请生成一份医学报告，包括所见和结论。以以下格式返回报告：所见：{} 结论：{}。"

# Qwen2-VL / Qwen2.5-VL's chat template (the checkpoints' chat_template.json): a conversation without a
# system turn gets the default system line; an image item renders as <|vision_start|><|image_pad|><|vision_end|>.
QWEN2_5_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def smart_resize(h: int, w: int, factor: int = 28, min_pixels: int = 256 * 28 * 28, max_pixels: int = 1500 ** 2):
    """Qwen2-VL's resize rule (reference, written from its definition)."""
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


@pytest.fixture(scope="module")
def qwen():
    return load_qwen_tokenizer()


@pytest.fixture(scope="module")
def lingshu():
    return load_echo_config(CONFIGS / "lingshu7b", all_stages=True)


@pytest.mark.parametrize("lang,instruction", [("en", ECHO_EN), ("zh", ECHO_ZH)])
def test_lingshu7b_two_image_prompt_is_echos_token_by_token(qwen, lingshu, lang, instruction):
    proc = build_processor(lingshu, qwen, Qwen2_5_VLConfig().vision_config)
    # a big image (scaled down to the 1500^2 bound) and a small one (scaled up to 256*28*28)
    big = generate_sample(1).to_pil().resize((2048, 1792))
    small = generate_sample(2).to_pil().resize((300, 260))
    x = proc([big, small], "Heart size is normal.", "No acute disease.", lang)

    sizes = [smart_resize(1792, 2048), smart_resize(260, 300)]
    assert x["image_grid_thw"].tolist() == [[1, h // 14, w // 14] for h, w in sizes]
    pixels = [h * w for h, w in sizes]
    assert pixels[0] <= 1500 ** 2 < smart_resize(1792, 2048, max_pixels=10 ** 8)[0] * 2048
    assert pixels[1] >= 256 * 28 * 28
    n_pads = [h * w // (28 * 28) for h, w in sizes]

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": instruction}]}]
    text = qwen.apply_chat_template(messages, chat_template=QWEN2_5_VL_TEMPLATE, tokenize=False,
                                    add_generation_prompt=True)
    head, first, second = text.split("<|image_pad|>")
    text = head + "<|image_pad|>" * n_pads[0] + first + "<|image_pad|>" * n_pads[1] + second
    expected = qwen(text, add_special_tokens=False).input_ids
    got = x["prompt_ids"].tolist()
    diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    assert diff is None and len(got) == len(expected), (
        f"first difference at token {diff}: {qwen.decode(got[diff or 0:(diff or 0) + 8])!r} "
        f"vs {qwen.decode(expected[diff or 0:(diff or 0) + 8])!r}")
    # and the instruction tokens are exactly the release's string, between the last image and <|im_end|>
    end = got.index(qwen.convert_tokens_to_ids("<|vision_end|>"), got.index(qwen.convert_tokens_to_ids("<|vision_end|>")) + 1)
    tail = got[end + 1:]
    assert qwen.decode(tail) == instruction + "<|im_end|>\n<|im_start|>assistant\n"
    assert qwen.decode(got[:16]).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>")


def test_lingshu7b_settings_are_the_releases(lingshu):
    d, m, e = lingshu.data, lingshu.model, lingshu.eval
    assert (d.prompt_style, d.max_images, d.min_pixels, d.max_pixels) == ("echo", None, 256 * 28 * 28, 2_250_000)
    assert m.mask_token == "<|MASK|>" and m.dtype == "bfloat16"
    assert (e.max_new_tokens, e.cache, lingshu.collect.block_size) == (512, "fused", 8)
    assert "echo_onestep_L8" in e.variants
    tiny = load_echo_config(CONFIGS / "tiny", all_stages=True)
    assert tiny.data.prompt_style == "compact"  # the demo's choice, named in its config


@pytest.mark.parametrize("style,lang,text", [
    ("echo", "en", "Findings: Heart is normal. Impression: No acute disease."),
    ("echo", "zh", "所见：心影不大。 结论：未见异常。"),
    ("compact", "en", "Findings: Heart is normal.\nImpression: No acute disease."),
    ("compact", "zh", "所见：心影不大。\n印象：未见异常。"),
])
def test_report_layout_and_its_split(style, lang, text):
    f, i = ("Heart is normal.", "No acute disease.") if lang == "en" else ("心影不大。", "未见异常。")
    assert format_report(f, i, lang, style) == text
    assert split_report(text) == (f, i)
    assert split_report("Findings: only findings here.") == ("only findings here.", "")
    assert split_report("no headers at all") == ("no headers at all", "")


def _echo_file(tmp_path):
    """An ECHO-format JSON like eval/CXRTest_demo/jsons/*.json, with synthetic images one folder up."""
    imgs = tmp_path / "CXRTest" / "s1"
    imgs.mkdir(parents=True)
    for k in range(2):
        generate_sample(k).to_pil().save(imgs / f"v{k}.png")
    jsons = tmp_path / "jsons"
    jsons.mkdir()
    entries = [
        {"sample_id": "a1", "images": ["../CXRTest/s1/v0.png", "../CXRTest/s1/v1.png"],
         "ground_truth": {"findings": "Lungs are clear.", "impression": "Normal chest."}},
        {"sample_id": "b2", "images": ["../CXRTest/s1/v1.png"],
         "ground_truth": {"findings": "两肺野清晰。", "impression": "未见异常。"}},
    ]
    path = jsons / "mimic_test_EN_for_infer_normalize_demo.json"
    path.write_text(json.dumps(entries, ensure_ascii=False, indent=4))
    return path, entries


def test_echo_records_in_and_out(tmp_path):
    path, entries = _echo_file(tmp_path)
    recs = read_records(path)  # the generic reader dispatches on the format
    assert [r.study_id for r in recs] == ["a1", "b2"]
    assert [r.language for r in recs] == ["en", "zh"] and {r.source for r in recs} == {"mimic_cxr"}
    assert recs[0].image_paths == [str(tmp_path / "jsons" / "../CXRTest/s1/v0.png"),
                                   str(tmp_path / "jsons" / "../CXRTest/s1/v1.png")]
    assert all(Path(p).is_file() for r in recs for p in r.image_paths)
    # out: paths relative to the new file's folder; reading it back finds the same files
    out = write_echo_records(tmp_path / "out" / "deep" / "copy.json", recs)
    written = json.loads(out.read_text())
    assert written[0] == {"sample_id": "a1", "images": ["../../CXRTest/s1/v0.png", "../../CXRTest/s1/v1.png"],
                          "ground_truth": entries[0]["ground_truth"]}
    back = read_echo_records(out)
    assert [Path(p).resolve() for p in back[0].image_paths] == [Path(p).resolve() for p in recs[0].image_paths]
    # JSONL works too, and extras ride along
    jl = write_echo_records(tmp_path / "copy.jsonl", [echo_dict(recs[1], tmp_path, output="x")])
    assert json.loads(jl.read_text().splitlines()[0])["output"] == "x"
    assert read_records(jl)[0].metadata["output"] == "x"


def test_malformed_echo_entries_are_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"sample_id": "ok", "images": ["a.png"], "ground_truth": {"findings": "f"}},
                                {"sample_id": "s7", "images": "a.png", "ground_truth": {}}]))
    with pytest.raises(ValueError, match=r"bad.json entry 1 \(sample_id 's7'\): images must be a list"):
        read_echo_records(path)
    rejects = []
    recs = read_echo_records(path, reject=rejects.append)
    assert [r.study_id for r in recs] == ["ok"] and len(rejects) == 1 and "s7" in rejects[0].reason
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"sample_id": "x", "images": ["a.png"]}\n{not json\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2: not valid JSON"):
        read_echo_records(jl)


def test_a_cxr_record_is_not_mistaken_for_an_echo_one(tmp_path):
    rec = CXRRecord("s1", "synthetic", ["images/a.png"], "f", "i")
    p = tmp_path / "records.jsonl"
    p.write_text(rec.to_json() + "\n")
    assert read_records(p)[0].source == "synthetic"
