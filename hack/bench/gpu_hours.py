#!/usr/bin/env python3
"""GPU-hours of one model over the first days after apply: the capacity plan against today's
behaviour and against the traffic-proportional minimum. A pure simulation, no cluster.

The rollout is driven by the operator's own state machine (`rollout.machine.decide`, every
analysis passing) and its own capacity plan (`rollout.capacity.plan`), pass after pass, against a
simulated cluster in which a replica asked for becomes Ready `--load` later (a GPU node, the image,
the weights) and a replica given back is gone at once. The FP16 fleet is already serving at
apply. Each pass does what the executor does: plan with the next step's weights, decide with
`ready_for_next` as the machine's readiness, plan again with the decided weights, scale up, move
traffic, scale down.

- ours: the replicas the plan asked for (a pod holds its GPUs from the moment it is asked for);
- keep-both: today's behaviour, both tiers at their full replicas from apply onwards;
- ideal: per pass, each tier at ceil(full x its share of the traffic applied in that pass),
  at least 1 while it has any: no headroom, no reserve, no bake, nothing kept ahead of time.

It also times a breach after the bake: judged on the slow clock by `rollout.after_bake`, rolled
back, the baseline coming back from `standbyReplicas` and traffic moving back as its replicas
become Ready (`--load` each).

`--local-stack` runs the same plan on a private local stack (control plane with KWOK GPU nodes,
the operator) with stages of seconds, and measures the Deployments' replicas every 0.5 s: ours
from the replicas, ideal from the traffic the operator told the router, beside the pure
simulation of the same stages. (It needs the executor that applies the plan.)

usage: hack/bench/gpu_hours.py [--days 7] [--replicas 4] [--load 5m] [--pass 60s]
                               [--reserve 100] [--standby 0] [--headroom 20] [--bake 1h]
                               [--local-stack [--horizon 150s]]
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from localstack import stack as localstack
from localstack.crds import apply_crds
from localstack.kubeapi import api_client, get_custom
from localstack.lab import OperatorProcess
from localstack.procs import free_port
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd
from quantrollout.api.durations import format_duration, parse_duration
from quantrollout.api.resolve import Tier, tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.rollout.after_bake import after_bake_of, next_watch_at, watch
from quantrollout.rollout.capacity import (
    CapacityPlan,
    Inputs,
    Settings,
    TierInput,
    Traffic,
    needed,
    next_traffic,
    plan,
    settings_for,
    step_traffic,
    tier_input,
)
from quantrollout.rollout.machine import (
    AnalysisSettings,
    Evaluation,
    RolloutState,
    decide,
)
from quantrollout.rollout.machine import (
    Inputs as MachineInputs,
)
from quantrollout.rollout.steps import Step, rollout_id, stages_hash, steps_for

T0 = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.UTC)
PASS = Evaluation("Pass")


# --local-stack: the same plan on the real control plane, with stages of seconds. Analysis is one
# custom rule that always passes (this measures capacity, not judging).
SHORT_STAGES: list[dict[str, Any]] = [
    {"name": "shadow", "duration": "20s"},
    {"name": "ab", "weight": 10, "duration": "30s"},
    {"name": "gradual", "weights": [25, 50, 75], "stepDuration": "10s"},
    {"name": "full"},
]
SHORT_ANALYSIS = {
    "interval": "1s", "minSamples": 0, "rules": [{"name": "custom", "query": "vector(0)", "max": "0"}],
}  # fmt: skip


def raw_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The default stages and settings, with the figures the command line changes."""
    rollout: dict[str, Any] = {"bakeDuration": args.bake, "rollbackReservePercent": args.reserve}
    if args.local_stack:
        rollout |= {"stages": SHORT_STAGES, "analysis": SHORT_ANALYSIS}
    return {
        "model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "baseline": {"artifact": "s3://models/fp16", "standbyReplicas": args.standby},
        "target": {"name": "int4-awq", "artifact": "s3://models/awq", "precision": "int4", "format": "awq"},
        "serving": {"replicas": args.replicas, "headroomPercent": args.headroom, "gpu": {"count": 1}},
        "rollout": rollout,
    }  # fmt: skip


def model_spec(args: argparse.Namespace) -> QuantizedModelSpec:
    return QuantizedModelSpec.model_validate(raw_spec(args))


@dataclass
class Cluster:
    """Each tier's pods, as the time each becomes Ready."""

    pods: dict[str, list[datetime.datetime]] = field(default_factory=dict)

    def observe(self, tier: Tier, now: datetime.datetime) -> TierInput:
        pods = self.pods.setdefault(tier.name, [])
        ready = sum(1 for at in pods if at <= now)
        return tier_input(tier, replicas=len(pods), ready_replicas=ready)

    def scale(self, p: CapacityPlan, now: datetime.datetime, load_s: float, up: bool) -> None:
        for t in p.tiers:
            pods = self.pods.setdefault(t.name, [])
            if up and t.replicas > len(pods):
                pods += [now + datetime.timedelta(seconds=load_s)] * (t.replicas - len(pods))
            elif not up and t.replicas < len(pods):
                pods.sort()  # the ones still loading go first
                del pods[t.replicas :]

    def gpus(self, gpus_per_replica: dict[str, int]) -> int:
        return sum(len(p) * gpus_per_replica[n] for n, p in self.pods.items())


@dataclass
class Totals:
    ours: float = 0.0
    ideal: float = 0.0
    ours_rollout: float = 0.0  # until the bake is over
    ideal_rollout: float = 0.0


def ideal_gpus(tier_inputs: tuple[TierInput, ...], traffic: Traffic) -> int:
    return sum(
        needed(t, traffic.load(t.name), headroom=False) * t.gpus_per_replica for t in tier_inputs
    )


def capacity(
    s: RolloutState, observed: tuple[TierInput, ...], current: Traffic, now: datetime.datetime,
    baseline: Tier, target: Tier, steps: tuple[Step, ...], cap: Settings,
) -> CapacityPlan:  # fmt: skip
    """The plan for the machine's state `s`, as the executor asks for it: the state's weights
    wanted, the next step's weights to be Ready for by the time the step is up."""
    wanted = step_traffic(baseline.name, target.name, s.target_weight, s.mirror_percent)
    started = s.phase != "Pending"
    index = s.step + 1 if started else 0
    upcoming = None
    if index < len(steps) and s.phase != "Succeeded":
        upcoming = next_traffic(baseline.name, target.name, steps[index])
    due = None
    hold = steps[s.step].duration_s
    if started and upcoming is not None and s.step_started_at and hold:
        due = s.step_started_at + datetime.timedelta(seconds=hold)
    return plan(
        Inputs(
            observed, current, wanted, s.phase, now, cap,
            full_at=s.step_started_at if s.phase == "Succeeded" else None,
            rolled_back_at=s.rolled_back_at, next=upcoming, next_at=due,
        )
    )  # fmt: skip


def simulate(args: argparse.Namespace) -> tuple[Totals, dict[str, datetime.datetime]]:
    spec = model_spec(args)
    baseline, target = tiers(spec)
    steps = steps_for(spec)
    cap = settings_for(spec)
    analysis = AnalysisSettings(
        interval_s=parse_duration(args.pass_), failure_limit=2, on_metrics_unavailable="pause",
        metrics_unavailable_grace_s=300,
    )  # fmt: skip
    load_s, tick = parse_duration(args.load), datetime.timedelta(seconds=parse_duration(args.pass_))
    gpus = {baseline.name: baseline.serving.gpu.count, target.name: target.serving.gpu.count}
    cluster = Cluster({baseline.name: [T0] * baseline.serving.replicas})  # serving before apply
    state, current = RolloutState(), Traffic({baseline.name: 100})
    totals, marks = Totals(), dict[str, datetime.datetime]()
    end = T0 + datetime.timedelta(days=args.days)
    now = T0
    while now < end:
        observed = (cluster.observe(baseline, now), cluster.observe(target, now))

        before = capacity(state, observed, current, now, baseline, target, steps, cap)
        decision = decide(
            state,
            MachineInputs(
                rollout_id=rollout_id(spec), steps=steps, stages_hash=stages_hash(steps),
                analysis=analysis, now=now, tiers_ready=before.ready_for_next, evaluation=PASS,
            ),
        )  # fmt: skip
        state = decision.state
        after = capacity(state, observed, current, now, baseline, target, steps, cap)
        cluster.scale(after, now, load_s, up=True)
        current = after.traffic
        cluster.scale(after, now, load_s, up=False)
        if state.phase == "Succeeded" and "full" not in marks:
            marks["full"] = now
        hours = tick.total_seconds() / 3600
        used, least = cluster.gpus(gpus) * hours, ideal_gpus(observed, current) * hours
        totals.ours += used
        totals.ideal += least
        baked = "full" in marks and (now - marks["full"]).total_seconds() >= cap.bake_s
        if not baked:
            totals.ours_rollout += used
            totals.ideal_rollout += least
        now += tick
    return totals, marks


@dataclass(frozen=True)
class BreachTimes:
    detected_s: float  # from the breach to the rollback (failureLimit evaluations)
    first_back_s: float  # from the breach to the first traffic back on the baseline
    all_back_s: float  # from the breach to all of it


def breach_after_bake(args: argparse.Namespace) -> BreachTimes:
    """A breach a day after full (long after the bake), just after an evaluation: the model
    judged by `after_bake.watch` on its slow clock (afterBakeInterval), rolled back after
    failureLimit failed evaluations, traffic moved as the baseline comes back from standby
    (passes every 5 s; each replica Ready `--load` after it is asked for)."""
    spec = model_spec(args)
    baseline, target = tiers(spec)
    steps = steps_for(spec)
    cap, after = settings_for(spec), after_bake_of(spec)
    analysis = AnalysisSettings(
        interval_s=30, failure_limit=2, on_metrics_unavailable="pause", metrics_unavailable_grace_s=300
    )  # fmt: skip
    load_s, tick = parse_duration(args.load), datetime.timedelta(seconds=5)
    standby = [T0] * min(cap.standby_replicas, baseline.serving.replicas)
    cluster = Cluster({baseline.name: standby, target.name: [T0] * target.serving.replicas})
    current = Traffic({target.name: 100})
    full_at = T0
    breach = full_at + datetime.timedelta(days=1)
    state = RolloutState(
        rollout_id=rollout_id(spec), phase="Succeeded", step=len(steps) - 1, target_weight=100,
        step_started_at=full_at, stages_hash=stages_hash(steps), last_evaluation_at=breach,
    )  # fmt: skip
    first = None
    now = breach
    while now < breach + datetime.timedelta(hours=2):
        due = next_watch_at(state, analysis, after)
        failing = Evaluation("Fail", ("repetition-rate 0.21 > 0.15",))
        state = watch(
            state,
            MachineInputs(
                rollout_id=rollout_id(spec), steps=steps, stages_hash=stages_hash(steps),
                analysis=analysis, now=now, evaluation=failing if due and now >= due else None,
            ),
            after,
        ).decision.state  # fmt: skip
        observed = (cluster.observe(baseline, now), cluster.observe(target, now))
        wanted = step_traffic(baseline.name, target.name, state.target_weight, 0)
        p = plan(
            Inputs(
                observed, current, wanted, state.phase, now, cap, full_at=full_at,
                rolled_back_at=state.rolled_back_at,
            )
        )  # fmt: skip
        cluster.scale(p, now, load_s, up=True)
        current = p.traffic
        cluster.scale(p, now, load_s, up=False)
        back = current.live.get(baseline.name, 0)
        if back and first is None:
            first = (now - breach).total_seconds()
        if back == 100 and state.rolled_back_at is not None:
            detected = (state.rolled_back_at - breach).total_seconds()
            return BreachTimes(detected, first or 0.0, (now - breach).total_seconds())
        now += tick
    raise SystemExit("traffic never came back to the baseline within 2h")


@dataclass
class Local:
    """GPU-seconds measured on the local stack, from the Deployments' replicas and the traffic
    the operator told the router, sampled every SAMPLE_S."""

    ours: float = 0.0
    ideal: float = 0.0
    seconds: float = 0.0
    full_after_s: float | None = None
    standby_after_s: float | None = None


SAMPLE_S = 0.5


def run_local(args: argparse.Namespace, horizon_s: float) -> Local:
    """A private local stack (control plane with KWOK GPU nodes, Prometheus) and the operator,
    one model with stages of seconds; measures for `horizon_s` after the model is created."""
    spec = model_spec(args)
    baseline, target = tiers(spec)
    inputs = {t.name: tier_input(t) for t in (baseline, target)}
    out = Local()
    with tempfile.TemporaryDirectory(prefix="qr-gpu-hours-") as tmp:
        stack = localstack.up(Path(tmp), api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port(),
                              prometheus_port=free_port())  # fmt: skip
        operator = OperatorProcess(
            stack.controlplane.kubeconfig, Path(tmp) / "operator.log", stack.prometheus.url
        )
        try:
            api = api_client(stack.controlplane.kubeconfig)
            apply_crds(api, [build_crd()])
            operator.start()
            operator.wait_ready()
            core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
            custom = client.CustomObjectsApi(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
            obj = {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "QuantizedModel",
                "metadata": {"name": "llama"}, "spec": raw_spec(args),
            }  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, obj)
            start = time.monotonic()
            while (now := time.monotonic()) - start < horizon_s:
                gpus = 0
                for tier in (baseline, target):
                    try:
                        dep = apps.read_namespaced_deployment(f"llama-{tier.name}", "bench")
                        gpus += int(dep.spec.replicas or 0) * tier.serving.gpu.count
                    except client.ApiException as err:
                        if err.status != 404:
                            raise
                status = get_custom(custom, GROUP, VERSION, "bench", PLURAL, "llama").get("status") or {}  # fmt: skip
                traffic = status.get("traffic") or {}
                weight, mirror = (
                    int(traffic.get("targetWeight") or 0),
                    int(traffic.get("mirrorPercent") or 0),
                )
                applied = step_traffic(baseline.name, target.name, weight, mirror)
                least = ideal_gpus(tuple(inputs.values()), applied)
                out.ours += gpus * SAMPLE_S
                out.ideal += least * SAMPLE_S
                out.seconds += SAMPLE_S
                if status.get("phase") == "Succeeded" and out.full_after_s is None:
                    out.full_after_s = now - start
                reasons = {
                    t.get("name"): t.get("capacityReason") for t in status.get("tiers") or []
                }
                if reasons.get(baseline.name) == "Standby" and out.standby_after_s is None:
                    out.standby_after_s = now - start
                time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - now)))
        finally:
            operator.stop()
            stack.down()
    return out


def local_main(args: argparse.Namespace) -> None:
    horizon_s = parse_duration(args.horizon)
    local = run_local(args, horizon_s)
    sim_args = argparse.Namespace(**{**vars(args), "days": horizon_s / 86400, "pass_": "1s"})
    simulated, _ = simulate(sim_args)
    keep_both = 2 * args.replicas * local.seconds
    print(
        f"local stack (KWOK GPU nodes), {args.horizon} after apply; stages shadow 20s, ab 10% 30s, "
        f"gradual 25/50/75% 10s each, full; bake {args.bake}; {args.replicas} replicas of 1 GPU "
        f"per tier; rollback reserve {args.reserve}%, standby {args.standby}, headroom "
        f"{args.headroom}%; sampled every {SAMPLE_S:g}s"
    )
    print(
        f"full after {local.full_after_s or float('nan'):.1f}s, baseline at standby after "
        f"{local.standby_after_s or float('nan'):.1f}s"
    )
    print(
        f"local: ours {local.ours:.0f} GPU-s, ideal {local.ideal:.0f}, keep-both {keep_both:.0f}; "
        f"the pure simulation of the same stages (replicas Ready {args.load} after asked, a pass "
        f"every 1s): ours {simulated.ours * 3600:.0f}, ideal {simulated.ideal * 3600:.0f}"
    )
    print(
        f"gpu-hours: ours={local.ours / 3600:.4f} keep-both={keep_both / 3600:.4f} "
        f"ideal={local.ideal / 3600:.4f}"
    )


def later(seconds: float) -> str:
    return "at once" if seconds <= 0 else f"{format_duration(seconds)} later"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--load", default="5m", help="time from asking for a replica to Ready")
    parser.add_argument("--pass", dest="pass_", default="60s", help="time between passes")
    parser.add_argument("--reserve", type=int, default=100, help="rollbackReservePercent")
    parser.add_argument("--standby", type=int, default=0, help="standbyReplicas")
    parser.add_argument("--headroom", type=int, default=20, help="headroomPercent")
    parser.add_argument("--bake", default="1h", help="bakeDuration")
    parser.add_argument(
        "--local-stack",
        action="store_true",
        help="run the same plan on a private local stack with stages of seconds (needs the tools)",
    )
    parser.add_argument("--horizon", default="150s", help="--local-stack: how long to measure")
    args = parser.parse_args()
    if args.local_stack:
        if args.bake == "1h":
            args.bake = "15s"
        if args.load == "5m":
            args.load = "2s"
        local_main(args)
        return

    totals, marks = simulate(args)
    keep_both = 2 * args.replicas * args.days * 24  # both tiers, 1 GPU per replica, all along
    full_at = marks.get("full")
    print(
        f"{args.days:g} days after apply; default stages (shadow 30m, ab 10% 24h, gradual "
        f"25/50/75% 1h each, full); bake {args.bake}; {args.replicas} replicas of 1 GPU per tier; "
        f"rollback reserve {args.reserve}%, standby {args.standby}, headroom {args.headroom}%; "
        f"a replica is Ready {args.load} after it is asked for; a pass every {args.pass_}"
    )
    if full_at is not None:
        print(f"full reached {format_duration((full_at - T0).total_seconds())} after apply")
    print(
        f"until the bake is over: ours {totals.ours_rollout:.1f} GPU-h, ideal "
        f"{totals.ideal_rollout:.1f}; after: ours {totals.ours - totals.ours_rollout:.1f}, "
        f"ideal {totals.ideal - totals.ideal_rollout:.1f}"
    )
    over = 100 * (totals.ours / totals.ideal - 1) if totals.ideal else 0.0
    print(f"ours is {over:+.1f}% against ideal (goal: within 10%)")
    times = breach_after_bake(args)
    print(
        f"breach a day after full, baseline at standby {args.standby}: rolled back "
        f"{format_duration(times.detected_s)} after it (2 failed evaluations, afterBakeInterval "
        f"{format_duration(after_bake_of(model_spec(args)).interval_s)}); traffic first back on "
        f"the baseline {later(times.first_back_s - times.detected_s)}, all of it "
        f"{format_duration(times.all_back_s - times.detected_s)} after the rollback "
        f"(simulated load time {args.load})"
    )
    print(f"gpu-hours: ours={totals.ours:.1f} keep-both={keep_both:.1f} ideal={totals.ideal:.1f}")


if __name__ == "__main__":
    main()
