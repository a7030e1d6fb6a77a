"""The MeSH -> observation mapping against hand-written cases (qualifiers, gated descriptors,
normal, codes that map to nothing, bad codes)."""

import pytest

from examples.iu_text.mesh import OBSERVATIONS, coverage, map_codes, mesh_labels, parse_code


def positives(codes):
    return sorted(k for k, v in mesh_labels(codes).items() if v == 1)


@pytest.mark.parametrize(("codes", "expected"), [
    (["Cardiomegaly/mild"], ["Cardiomegaly"]),
    (["Pulmonary Atelectasis/base/left"], ["Atelectasis"]),
    (["Opacity/lung/upper lobe/right", "Pulmonary Atelectasis/upper lobe/right", "Opacity/lung/lingula"],
     ["Atelectasis", "Lung Opacity"]),
    (["Airspace Disease/lung/base/right"], ["Lung Opacity"]),
    (["Density/retrocardiac"], ["Lung Opacity"]),
    (["Pulmonary Congestion/mild"], ["Edema"]),
    (["Nodule/lung/upper lobe/left"], ["Lung Lesion"]),
    (["Hydropneumothorax/right"], ["Pleural Effusion", "Pneumothorax"]),
    (["Fractures, Bone/ribs/left/healed"], ["Fracture"]),
    (["Catheters, Indwelling"], ["Support Devices"]),
    (["Cardiac Shadow/enlarged"], ["Cardiomegaly"]),          # gated: needs "enlarged"
    (["Cardiac Shadow"], []),
    (["Mediastinum/widened"], ["Enlarged Cardiomediastinum"]),
    (["Mediastinum/right"], []),
    (["Costophrenic Angle/left/blunted"], ["Pleural Effusion"]),
    (["Costophrenic Angle/left"], []),
    (["Thickening/pleura/apex/bilateral"], ["Pleural Other"]),
    (["normal"], ["No Finding"]),
    (["normal", "Catheters, Indwelling"], ["No Finding", "Support Devices"]),  # devices are no pathology
    (["normal", "Opacity/lung/base/left"], ["Lung Opacity"]),                  # a pathology wins over normal
    (["Calcified Granuloma/lung/upper lobe/right"], []),
    (["Thoracic Vertebrae/degenerative", "Aorta/tortuous", "No Indexing"], []),
    (["Technical Quality of Image Unsatisfactory "], []),
    (["CARDIOMEGALY/Severe"], ["Cardiomegaly"]),                              # case-insensitive
    ([], []),
])
def test_hand_written_cases(codes, expected):
    assert positives(codes) == expected


def test_labels_cover_the_shared_vocabulary_and_assert_presence_only():
    labels = mesh_labels(["Cardiomegaly/mild"])
    assert list(labels) == list(OBSERVATIONS)
    assert set(labels.values()) == {1, None}  # codes never state a negative


def test_qualifiers_and_sides_are_parsed_not_scored():
    code = parse_code(" Pulmonary Atelectasis / base / Left ")
    assert code.descriptor == "Pulmonary Atelectasis"
    assert code.qualifiers == ("base", "left")
    assert code.sides == {"left"}
    assert parse_code("Opacity/lung/bilateral").sides == {"left", "right"}
    assert mesh_labels(["Cardiomegaly/mild"]) == mesh_labels(["Cardiomegaly/severe"])


def test_unmapped_codes_are_listed():
    labels, unmapped = map_codes(["Cardiomegaly", "Calcified Granuloma/lung", "Spine/degenerative"])
    assert unmapped == ["Calcified Granuloma", "Spine"]
    assert labels["Cardiomegaly"] == 1


@pytest.mark.parametrize("bad", ["", "   ", "/left", None])
def test_bad_codes_raise(bad):
    with pytest.raises(ValueError, match="MeSH code"):
        parse_code(bad)


def test_coverage_counts():
    c = coverage([["normal"], ["Calcified Granuloma"], ["Cardiomegaly", "Aorta/tortuous"]])
    assert c["studies"] == 3 and c["studies_with_a_label"] == 2
    assert c["codes_mapped"] == 2 and c["codes_unmapped"] == 2
