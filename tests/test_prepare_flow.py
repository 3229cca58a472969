"""prepare on datatrove: the same prepared splits and report with the local executor (any tasks and workers), with
Ray on a local instance, and as the in-memory reference (lifecycle.corpus.prepare_corpus); Slurm's sbatch script;
a task's data error as one line."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lifecycle.core import DataError, StageError
from lifecycle.corpus import SPLITS, prepare_corpus
from lifecycle.datapipe import make_executor, quiet_datatrove, run_pipeline
from lifecycle.io import read_jsonl
from lifecycle.params import schema as P
from lifecycle.prepare_run import prepare_sharded

WORDS = ("river mountain forest lantern copper violin harbor meadow thunder pepper saddle glacier orchard compass "
         "ribbon falcon marble canyon velvet anchor bramble cider dune ember fjord garnet hazel iris juniper kettle "
         "the of and to with that have be").split()


def _corpus(n: int = 120, seed: int = 7) -> list[dict]:
    """Two sources; exact copies (up to case and spaces), near copies (two words changed), PII, short texts."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 90))]
        if i % 11 == 3:
            words.insert(5, f"mail{i}@example.com")
        docs.append(" ".join(words))
    for i in range(0, n, 9):
        docs.insert(i + 3, docs[i].upper().replace(" ", "  "))  # exact up to case and whitespace
    for i in range(1, n, 13):
        words = docs[i].split()
        words[4], words[-4] = "zzchanged", "zzagain"
        docs.insert(i + 5, " ".join(words))
    docs += ["too short", "tiny"]
    return [{"id": f"s{i % 2}:{i}", "text": t, "source": f"source{i % 2}"} for i, t in enumerate(docs)]


def _params() -> P.PrepareParams:
    return P.PrepareParams.model_validate({
        "filters": {"pretrain": {"min_words": 5}, "finetune": {}},
        "dedup": {"near": {"threshold": 0.7, "num_perm": 128, "shingle_size": 3}},
        "split": {"validation": 0.1, "test": 0.1}})


def _shard(docs: list[dict], folder: Path, per: int = 23) -> Path:
    folder.mkdir(parents=True)
    for k in range(0, len(docs), per):
        (folder / f"{k // per:05d}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[k:k + per]))
    return folder


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    quiet_datatrove()
    return _shard(_corpus(), tmp_path_factory.mktemp("raw") / "pretrain")


def _run(raw: Path, root: Path, **executor) -> tuple[dict, dict[str, bytes]]:
    spec = P.DataExecutorParams(**executor)
    report, _ = prepare_sharded("pretrain", raw, root / "out", _params(), 1, spec, root / "work")
    files = {str(f.relative_to(root / "out")): f.read_bytes() for f in sorted((root / "out").rglob("*.jsonl"))}
    return report, files


@pytest.fixture(scope="module")
def one_task(raw, tmp_path_factory):
    return _run(raw, tmp_path_factory.mktemp("one"), tasks=1, workers=1)


def test_the_pipeline_gives_the_reference_splits_and_report(raw, one_task, tmp_path):
    report, _ = one_task
    ref_splits, ref_report = prepare_corpus(read_jsonl(raw), _params().filters["pretrain"], _params(), 1, "pretrain")
    (tmp_path / "out").mkdir()
    _, files = one_task
    for split in SPLITS:
        got = [json.loads(line) for name, data in files.items() if name.startswith(f"{split}/")
               for line in data.decode().splitlines()]
        assert got == ref_splits[split]
    assert report == ref_report
    assert report["duplicates_removed"]["exact"] >= 10 and report["duplicates_removed"]["near"] >= 5
    assert report["pii_replaced"]["email"] >= 5


@pytest.mark.parametrize("dedup", [{"exact": False}, {"near": {"enabled": False}},
                                   {"exact": False, "near": {"enabled": False}}])
def test_each_dedup_switch_gives_the_reference(raw, tmp_path, dedup):
    params = _params()
    params = params.model_copy(update={"dedup": P.Dedup.model_validate(
        {"exact": dedup.get("exact", True), "near": {**params.dedup.near.model_dump(), **dedup.get("near", {})}})})
    spec = P.DataExecutorParams(tasks=3, workers=2)
    report, _ = prepare_sharded("pretrain", raw, tmp_path / "out", params, 1, spec, tmp_path / "work")
    ref_splits, ref_report = prepare_corpus(read_jsonl(raw), params.filters["pretrain"], params, 1, "pretrain")
    assert report == ref_report
    assert [d["id"] for d in read_jsonl(tmp_path / "out/train")] == [d["id"] for d in ref_splits["train"]]


def test_outputs_are_one_file_per_raw_shard_and_split(raw, one_task):
    _, files = one_task
    shards = {p.name for p in raw.glob("*.jsonl")}
    assert {name.split("/")[0] for name in files} == set(SPLITS)
    assert {name.split("/")[1] for name in files} <= shards


@pytest.mark.parametrize("tasks, workers", [(3, 2), (6, 2)])
def test_byte_identical_whatever_the_tasks_and_workers(raw, one_task, tmp_path, tasks, workers):
    assert _run(raw, tmp_path, tasks=tasks, workers=workers) == one_task


def test_ray_on_a_local_instance_gives_the_same_bytes(raw, one_task, tmp_path):
    pytest.importorskip("ray")
    assert _run(raw, tmp_path, kind="ray", tasks=3, workers=2) == one_task


class _Broken:
    """A pipeline step that stops on bad data at its task's second document."""

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        for i, doc in enumerate(data):
            if i == 1:
                raise DataError(f"shard-{rank}.jsonl", i + 1, "not valid JSON")
            yield doc


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_task_data_error_is_the_stage_error_line(raw, tmp_path, kind):
    from lifecycle.prepare_flow import RawShards

    if kind == "ray":  # Ray's workers cannot import this test module: send _Broken's code along
        import sys

        from ray import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = P.DataExecutorParams(kind=kind, tasks=2, workers=2)
    with pytest.raises(StageError) as err:
        run_pipeline(spec, [RawShards(raw), _Broken()], 2, tmp_path, "broken")
    assert str(err.value) in ("shard-0.jsonl: row 2: not valid JSON", "shard-1.jsonl: row 2: not valid JSON")


def test_slurm_writes_an_sbatch_script_with_the_params(raw, tmp_path, monkeypatch):
    """No cluster here: datatrove's launcher is caught and the script it would submit is checked."""
    import datatrove.executor.slurm as slurm

    from lifecycle.prepare_flow import RawShards

    submitted = []
    monkeypatch.setattr(slurm, "launch_slurm_job", lambda script, *args: submitted.append((script, args)) or "42")
    spec = P.DataExecutorParams(kind="slurm", tasks=5, slurm={
        "partition": "cpu", "time": "02:30:00", "cpus_per_task": 4, "mem_per_cpu_gb": 3,
        "env_command": "source /shared/llm-lifecycle/.venv/bin/activate"})
    executor = make_executor(spec, [RawShards(raw)], 5, tmp_path / "logs", "filter")
    executor.launch_job()
    script, args = submitted[0]
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=02:30:00", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem-per-cpu=3G", "#SBATCH --array=0-4\n", "#SBATCH --job-name=llm-lifecycle-filter",
                 "source /shared/llm-lifecycle/.venv/bin/activate"):
        assert line in script, script
    assert "launch_pickled_pipeline" in script and (tmp_path / "logs/executor.pik").exists()
    assert executor.job_id == "42"


def test_slurm_without_a_partition_is_a_params_error():
    with pytest.raises(ValueError, match="kind: slurm needs slurm.partition"):
        P.DataExecutorParams(kind="slurm")
