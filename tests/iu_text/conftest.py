"""A handful of real IU-Xray reports (from the bundled archive) and the tiny stand-in tokenizer."""

import tarfile

import pytest


@pytest.fixture(scope="session")
def few_reports(tmp_path_factory):
    """24 NLMCXR XML reports extracted from torchxrayvision's bundled archive."""
    from examples.echo_cxr.data.readers.iu_xray import bundled_reports_path

    out = tmp_path_factory.mktemp("iu_reports")
    with tarfile.open(bundled_reports_path(), "r:*") as tar:
        n = 0
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                (out / member.name.rsplit("/", 1)[-1]).write_bytes(tar.extractfile(member).read())
                n += 1
                if n == 24:
                    break
    return out


@pytest.fixture(scope="session")
def tiny_tok(tmp_path_factory):
    from examples.iu_text.prompts import tiny_tokenizer

    corpus = ["Findings: The heart size is normal. No pleural effusion.\nImpression: Normal chest.",
              "MeSH codes: Cardiomegaly/mild; Pulmonary Atelectasis/base/left\nWrite the Findings and Impression."] * 5
    return tiny_tokenizer(corpus, tmp_path_factory.mktemp("tok") / "tiny", vocab_size=300)
