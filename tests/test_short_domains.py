"""A domain too short for one sequence fails at data preparation, naming the domain, its split and the fix."""
import pytest

from runner import train_cli
from midsweep.config import DataConfig, SourceConfig
from midsweep.data import DataSourceError, prepare_domains

LONG = "a long enough document for a sequence of sixty-four bytes plus the one next token to predict. " * 2


def files_domain(tmp_path, lines: list[str]) -> SourceConfig:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(lines) + "\n")
    return SourceConfig(kind="files", data_files=[str(path)], heldout_documents=1)


@pytest.mark.parametrize("lines,split,fix", [(["short", LONG], "held-out", "raise data.domains.tiny.heldout_documents"),
                                             ([LONG, "short"], "train", "lower data.domains.tiny.heldout_documents")])
def test_a_split_shorter_than_one_sequence_names_the_domain(tmp_path, lines, split, fix):
    cfg = DataConfig(domains={"tiny": files_domain(tmp_path, lines)}, cache_dir=str(tmp_path / "cache"))
    assert prepare_domains(cfg)["tiny"].train.num_documents == 1  # without a sequence length: prepared
    with pytest.raises(DataSourceError) as err:
        prepare_domains(cfg, seq_len=64)
    message = str(err.value)
    assert "domain 'tiny'" in message and f"the {split} split" in message and fix in message
    assert "model.seq_len" in message


@pytest.mark.slow
def test_a_run_with_a_too_short_domain_fails_at_data_preparation(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(f"short\n{LONG}\n")
    proc = train_cli("experiment=nano_test", f"train.out_dir={tmp_path / 'sweep'}", "data.domains.code.kind=files",
                     "data.domains.code.name=''", f"data.domains.code.data_files=[{path}]",
                     "data.domains.code.heldout_documents=1", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "domain 'code': the held-out split has 6 tokens" in log and "IndexError" not in log
