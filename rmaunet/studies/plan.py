"""Planning a study: its rows, the trainings they need, and which ones the store already has.

No Ray here: `rmaunet study plan` and the runner both start from a StudyPlan (what the
cluster offers comes in as a Capacity, read by rmaunet.studies.session.study_cluster).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmaunet.errors import DataError, aligned_columns, duration, plural
from rmaunet.storage import is_uri
from rmaunet.store import ResultsStore
from rmaunet.studies.capacity import UNBOUNDED, Capacity, TrialRequest, trial_requests
from rmaunet.studies.cost import DEFAULT_GPU, GIB, GPUS, RESERVE_GIB, UTILISATION, Gpu, TrainingCost, cluster_gpu
from rmaunet.studies.expand import PlannedRow, expand
from rmaunet.studies.spec import StudySpec

if TYPE_CHECKING:  # the data layer imports NumPy and the readers; annotations only
    from rmaunet.config import TrialConfig
    from rmaunet.data import DataSummary

__all__ = ["StudyPlan", "plan_study", "resolve_data", "usable", "cost_report"]


def usable(result: dict[str, Any] | None) -> bool:
    """A stored result that a rerun reuses. A failed trial (NaN loss, out of memory) is a
    result too: rerunning it would fail again; delete its trial folder to retry it."""
    return result is not None and result.get("status") in ("ok", "failed")


class StudyPlan:
    def __init__(
        self,
        spec: StudySpec,
        planned: list[PlannedRow],
        store: ResultsStore,
        data: dict[str, Path | str],
        fingerprints: dict[str, str],
    ) -> None:
        self.spec = spec
        self.planned = planned
        self.data = data
        self.fingerprints = fingerprints

        unique: dict[str, PlannedRow] = {}
        for p in planned:
            unique.setdefault(p.trial_id, p)
        self.unique = unique
        self.finished = {tid for tid in unique if usable(store.finished_trial(tid))}
        self.to_train = [p for tid, p in unique.items() if tid not in self.finished]
        self._summaries: dict[tuple[str, tuple[str, ...], int | None], DataSummary] = {}

    def data_summary(self, config: TrialConfig) -> DataSummary:
        """What `validate_data` learnt of the data `config` reads: every file read once, per
        distinct set of raw channels and tile limit (staged into this node's cache first when
        the data is under a URI: what a trial on this node reads)."""
        from rmaunet.data import validate_data
        from rmaunet.data.bands import resolve_bands
        from rmaunet.data.staging import local_data
        from rmaunet.datasets import dataset_info

        name = config.dataset
        key = (name, dataset_info(name).channels(resolve_bands(config.bands, name)), config.max_tiles)
        if key not in self._summaries:
            self._summaries[key] = validate_data(config, local_data(self.data[name], name, self.fingerprints[name]))
        return self._summaries[key]

    def costs(self, *, calibrated: bool = True) -> list[TrainingCost]:
        """The trainings still to run, costed (rmaunet.studies.cost); a search: its budget of
        trainings, each costed at the base config (the values it samples may change its cost)."""
        from rmaunet.data import split_sizes
        from rmaunet.data.bands import resolve_bands
        from rmaunet.studies.cost import training_costs

        if self.spec.kind == "search":
            (label, _), *_ = trial_requests(self.spec)  # "search trials": one row, as its request
            rows = [(label, self.spec.base, 1)] * self.spec.budget
        else:
            rows = [(p.label, p.config, self.request(p).workers) for p in self.to_train]
        sizes: dict[TrialConfig, dict[str, int]] = {}  # a search's budget repeats one config
        trainings = []
        for label, config, workers in rows:
            summary = self.data_summary(config)
            if config not in sizes:
                sizes[config] = split_sizes(config, summary)
            side = min(summary.tile_shape[0], config.crop or summary.tile_shape[0])
            bands = len(resolve_bands(config.bands, config.dataset))
            trainings.append((label, config, sizes[config], bands, side, workers))
        # Calibrated with the thread pools of a trial of the spec's CPUs (rmaunet.training.trial.configure_threads).
        threads = max(int(self.spec.resources["cpu"]), 1)
        return training_costs(trainings, calibrated=calibrated, threads=threads)

    def manifest(self) -> dict[str, Any]:
        """What `rmaunet study status` reads back: every planned (row, seed) and its trial."""
        s = self.spec
        return {
            "study": s.name,
            "kind": s.kind,
            "budget": s.budget,
            "rows": [
                {
                    "row": p.label,
                    "row_index": p.row_index,
                    "seed": p.seed,
                    "trial_id": p.trial_id,
                    "epochs": p.config.epochs,
                }
                for p in self.planned
            ],
        }

    def summary(self) -> str:
        s = self.spec
        if s.kind == "search":
            return f"{s.name} (search): up to {s.budget} sampled trainings, {s.scheduler.upper()} scheduler, Optuna TPE"
        reused = len(self.unique) - len(self.to_train)
        dup = len(self.planned) - len(self.unique)
        return (
            f"{s.name} ({s.kind}): {plural(len(s.rows), 'row')} × {plural(len(s.seeds), 'seed')} = "
            f"{plural(len(self.planned), 'result')}; {plural(len(self.to_train), 'training')} to run, "
            f"{reused} reused from the store" + (f", {dup} shared between rows" if dup else "")
        )

    def request(self, row: PlannedRow) -> TrialRequest:
        """What one trial of `row` asks the cluster for."""
        return trial_requests(self.spec)[row.row_index][1]

    def capacity_line(self, capacity: Capacity) -> str:
        """The cluster's nodes and node types, and how many trials of each request run at once."""
        cap = self.spec.max_concurrent
        counts: dict[str, int] = {}
        for _, request in trial_requests(self.spec):
            fit = capacity.trials_at_once(request)
            counts[str(request)] = min(fit, cap) if cap else fit
        at_once = ", ".join(f"{_many(n)} of {request}" for request, n in counts.items())
        limit = f" (max_concurrent {cap})" if cap else ""
        return f"capacity: {capacity.describe()}; trials at once: {at_once}{limit}"


def _many(count: int) -> str:
    return "unbounded" if count >= UNBOUNDED else str(count)


def resolve_data(spec: StudySpec, data: Path | str | Mapping[str, Path | str]) -> dict[str, Path | str]:
    """One folder or object-store URI per dataset the study uses: a single one serves a
    one-dataset study; a cross-dataset study (Table XI) names one per dataset. A URI stays
    as it is: whether it holds data is learned by listing it (plan_study)."""
    needed = sorted({r.config.dataset for r in spec.rows} | {spec.base.dataset})
    if isinstance(data, Mapping):
        folders = {k: _absolute(v) for k, v in data.items()}
        if len(folders) == 1 and len(needed) == 1 and needed[0] not in folders:
            folders = {needed[0]: next(iter(folders.values()))}
    else:
        folders = {name: _absolute(data) for name in needed}
        if len(needed) > 1:
            raise DataError(
                f"{data}: study {spec.name!r} uses datasets {', '.join(needed)}: pass --data NAME=DIR for each"
            )
    for name in needed:
        if name not in folders:
            raise DataError(f"{spec.path}: no data folder for dataset {name!r} (pass --data {name}=DIR)")
        if not is_uri(folders[name]) and not Path(folders[name]).exists():
            raise DataError(f"{folders[name]}: data folder not found")
    return {name: folders[name] for name in needed}


def _absolute(data: Path | str) -> Path | str:
    return data if is_uri(data) else Path(data).resolve()


def plan_study(
    spec: StudySpec, data: Path | str | Mapping[str, Path | str], storage: Path | str, *, check_data: bool = True
) -> StudyPlan:
    """The study's rows and trainings; with check_data, every data file its trials will
    read is read once first, so bad data is one DataError naming the file, before any trial.
    Data under a URI is fingerprinted from a listing of its objects."""
    from rmaunet.data import fingerprint
    from rmaunet.data.folder import check_data_folder
    from rmaunet.data.staging import remote_fingerprint

    folders = resolve_data(spec, data)
    for folder in folders.values():
        if not is_uri(folder):
            check_data_folder(folder)  # a broken link or a FIFO: one line, not the fingerprint's traceback
    fingerprints = {
        name: remote_fingerprint(folder, name) if is_uri(folder) else fingerprint(folder, name)
        for name, folder in folders.items()
    }
    plan = StudyPlan(spec, expand(spec, fingerprints), ResultsStore(storage), folders, fingerprints)
    if check_data:
        check_study_data(spec, plan)
    return plan


def check_study_data(spec: StudySpec, plan: StudyPlan) -> None:
    """Read what the trainings still to run will read (trials already in the store read
    nothing), once per distinct set of raw channels and tile limit, and refuse a config
    that would fail on that data in every trial (tile size against depth, too few tiles)."""
    from rmaunet.data import check_trainable

    configs = [p.config for p in plan.to_train] if spec.kind != "search" else [spec.base]
    for config in configs:
        check_trainable(config, plan.data_summary(config))


# --------------------------------------------------------------------------- the cost table
def cost_report(
    plan: StudyPlan,
    costs: list[TrainingCost],
    capacity: Capacity,
    gpu: Gpu | None = None,
    utilisation: float = UTILISATION,
) -> str:
    """`rmaunet study plan`'s cost of the trainings still to run: per row and in total their
    FLOPs, peak memory per trial (flagged where it exceeds the GPU judged against: `gpu`, else
    the cluster's own GPU type, else DEFAULT_GPU), GPU-hours on each of GPUS at `utilisation`,
    the time on this machine's CPU where calibrated, and the wall time on `capacity`. The
    conventions behind each figure (rmaunet.studies.cost) are printed under the table."""
    if not costs:
        return "cost: nothing to train (every training this study needs is in the store)"
    nodes = [t.resources for t in (*capacity.scalable, *capacity.live)]
    found = cluster_gpu(nodes)
    judged = gpu or found or GPUS[DEFAULT_GPU]
    source = "--gpu" if gpu else ("the cluster's accelerator_type" if found else "default")
    rows: dict[str, list[TrainingCost]] = {}
    for cost in costs:
        rows.setdefault(cost.label, []).append(cost)
    calibrated = all(c.calibration is not None for c in costs)

    header = ["row", "trainings", "GFLOP/img", "FLOPs", "memory/trial @batch", f"fits {judged.name}"]
    header += list(GPUS) + (["this CPU"] if calibrated else [])
    table, over = [header], []
    for label, group in [*rows.items(), ("total", costs)]:
        memory = max(c.memory_bytes for c in group)
        fits = all(c.fits(judged) for c in group)
        if label != "total" and not fits:
            over.append(label)
        line = [
            label,
            str(len(group)),
            f"{group[0].footprint.flops / 1e9:.3g}" if label != "total" else "",
            _flop_count(sum(c.flops for c in group)),
            _bytes(memory) + (f" @{group[0].batch_per_worker}" if label != "total" else ""),
            "yes" if fits else "NO",
        ]
        line += [duration(sum(c.gpu_seconds(g, utilisation) for c in group)) for g in GPUS.values()]
        if calibrated:
            line.append(duration(sum(c.cpu_seconds() or 0.0 for c in group)))
        table.append(line)

    precisions = sorted({c.config.precision for c in costs})
    lines = [
        f"cost of the {plural(len(costs), 'training')} to run (GPU columns: time on one GPU at "
        f"{100 * utilisation:g} % of its peak" + ("; this CPU: as calibrated below):" if calibrated else "):"),
        *("  " + line for line in aligned_columns(table)),
    ]
    if over:
        lines.append(
            f"! over {judged.name}'s {judged.memory_gib:g} GiB (less {RESERVE_GIB:g} GiB reserve; GPU from {source}): "
            f"{', '.join(repr(label) for label in over)}: lower batch_size, use mixed precision or a larger GPU"
        )
    else:
        lines.append(f"every trial fits {judged.name}'s {judged.memory_gib:g} GiB (GPU from {source})")
    lines.append(
        f"GPU-hours at {100 * utilisation:g} % of each GPU's dense datasheet peak for precision "
        f"{', '.join(precisions)} (float32: TF32 where the GPU has it; mixed: FP16/BF16 tensor cores)"
    )
    lines.append(_wall_line(plan, costs, capacity, judged, utilisation))
    if calibrated:
        first, parts = costs[0].calibration, costs[0].cpu_parts()
        assert first is not None and parts is not None
        total = sum(c.cpu_seconds() or 0.0 for c in costs)
        threads = plural(first.threads, "TensorFlow thread")
        share = ", ".join(f"{name} {100 * seconds / sum(parts.values()):.0f} %" for name, seconds in parts.items())
        lines.append(
            f"this machine: {first.flops_per_s / 1e9:.3g} GFLOP/s effective in training steps ({threads}, "
            f"{plural(first.images, 'image')} timed): {duration(total)} of training one after another "
            f"(the first row's training: {share})"
        )
    lines += [
        "FLOPs per training = forward FLOPs/img × (3 × train tiles × epochs + validation tiles × epochs + every tile "
        "once for the final scoring)",
        "memory/trial @batch = params × 4 B + trainable × 12 B (gradients, Adam) [+ 2 B mixed precision] "
        "+ batch × forward activations per image",
    ]
    return "\n".join(lines)


def _wall_line(plan: StudyPlan, costs: list[TrainingCost], capacity: Capacity, gpu: Gpu, utilisation: float) -> str:
    """The study's wall time on the cluster: per request, its trainings' time spread over the
    trials that run at once (never less than its longest training). A trial asking a GPU is
    timed on `gpu`; one on CPUs at this machine's calibrated rate (when calibrated)."""
    requests = dict(trial_requests(plan.spec))  # by row label (a search's trials: costs() labels them so)
    cap = plan.spec.max_concurrent
    groups: dict[TrialRequest, list[float]] = {}
    for cost in costs:
        request = requests[cost.label]
        if request.gpu > 0:
            seconds: float | None = cost.gpu_seconds(gpu, utilisation) / request.workers
        else:
            seconds = cost.cpu_seconds()
        if seconds is None:
            return f"wall time on the cluster ({capacity.source}): not estimated (CPU trials, no calibration)"
        groups.setdefault(request, []).append(seconds)
    wall, parts = 0.0, []
    for request, times in groups.items():
        fit = capacity.trials_at_once(request)
        at_once = max(min(fit, cap) if cap else fit, 1)
        wall += max(max(times), sum(times) / at_once)
        where = f"on {gpu.name} at {100 * utilisation:g} %" if request.gpu > 0 else "at this machine's CPU rate"
        parts.append(f"{_many(at_once)} of {request} at once, {duration(sum(times) / len(times))} each {where}")
    return f"wall time on the cluster ({capacity.source}): {'; '.join(parts)}: about {duration(wall)}"


def _flop_count(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops / 1e9:.3g} GFLOP"


def _bytes(count: float) -> str:
    return f"{count / GIB:.2f} GiB" if count >= GIB else f"{count / 2**20:.0f} MiB"
