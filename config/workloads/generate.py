#!/usr/bin/env python3
"""Generates the built-in workloads of `hearth simulate` (config/workloads/*.jsonl).

Seeded, so the files are reproducible: python3 config/workloads/generate.py [NAME...]
(`generate.py scale OUT.jsonl` writes the ~100,000-build workload of the speed check.)
Arrivals follow a working-day profile (quiet nights); build times and cache sizes are
log-normal around figures typical of real CI (cold minutes, warm tens of seconds, caches of GBs).
"""
import json
import math
import random
import sys

DAY = 86400.0
DAYS = 2


def profile(t):
    """Relative arrival rate by hour of day: quiet night, busy working hours, a lunch dip."""
    h = (t % DAY) / 3600.0
    if 9 <= h < 12 or 13 <= h < 18:
        return 1.0
    if 12 <= h < 13:
        return 0.6
    if 7 <= h < 9 or 18 <= h < 21:
        return 0.3
    return 0.04


def arrivals(rng, per_hour, days, start=0.0):
    """Non-homogeneous Poisson arrivals (thinning) over `days`, peak rate `per_hour`."""
    t, out, end = start, [], start + days * DAY
    while True:
        t += rng.expovariate(per_hour / 3600.0)
        if t >= end:
            return out
        if rng.random() < profile(t):
            out.append(t)


def lognorm(rng, median, sigma, lo, hi):
    return min(hi, max(lo, median * math.exp(rng.gauss(0, sigma))))


def zipf_pick(rng, n, s):
    weights = [1.0 / (i + 1) ** s for i in range(n)]
    return lambda: rng.choices(range(n), weights)[0]


def cluster(nodes, builders, budget, zones=("a", "b", "c"), bps=250e6, overhead=8):
    return {
        "kind": "cluster",
        "nodes": [
            {"name": f"n{i+1}", "zone": zones[i % len(zones)], "builders": builders, "cacheBudgetBytes": budget}
            for i in range(nodes)
        ],
        "storeBytesPerSecond": bps,
        "restoreOverheadSeconds": overhead,
    }


def image(rng, cold_median, warm_ratio, cache_median):
    cold = round(lognorm(rng, cold_median, 0.45, 60, 3600))
    warm = round(max(8, cold * lognorm(rng, warm_ratio, 0.35, 0.04, 0.4)))
    cache = round(lognorm(rng, cache_median, 0.5, 0.3e9, 30e9), -6)
    return {"coldSeconds": cold, "warmSeconds": warm, "cacheBytes": cache}


def build(at, ns, key, img, restore=None, context=None, mode=None):
    rec = {"kind": "build", "at": round(at, 1), "namespace": ns, "key": key}
    if restore:
        rec["restoreKeys"] = restore
    if mode:
        rec["mode"] = mode
    rec.update(img)
    if context:
        rec["context"] = context
    return rec


def monorepo(rng):
    """One repository, 40 Dockerfiles. Merges to main rebuild the services they touch (a few,
    core services more often); pull requests build the touched services on their branch,
    falling back to main's cache. 60% of Dockerfiles use the repository root as context."""
    n = 40
    imgs = [image(rng, 480, 0.13, 5e9) for _ in range(n)]
    root_ctx = [rng.random() < 0.6 for _ in range(n)]
    pick = zipf_pick(rng, n, 0.9)
    ctx = lambda s: "github.com/acme/platform" if root_ctx[s] else f"github.com/acme/platform/services/s{s:02d}"
    key = lambda branch, s: f"platform:{branch}:services/s{s:02d}/Dockerfile"
    recs = []
    for t in arrivals(rng, 30, DAYS):  # merges to main
        for s in {pick() for _ in range(1 + int(rng.expovariate(1 / 2.0)))}:
            recs.append(build(t + rng.uniform(0, 20), "platform", key("main", s), imgs[s], context=ctx(s)))
    for pr, t in enumerate(arrivals(rng, 16, DAYS)):  # pull requests, each pushed a few times
        touched = {pick() for _ in range(1 + int(rng.expovariate(1 / 1.5)))}
        for push in range(1 + int(rng.expovariate(1 / 2.5))):
            tp = t + push * rng.uniform(900, 5400)
            for s in touched:
                recs.append(build(tp + rng.uniform(0, 20), "platform", key(f"pr-{pr}", s), imgs[s],
                                  restore=[key("main", s)], context=ctx(s)))
    return cluster(6, 3, 150e9), recs


def many_repos(rng):
    """300 small repositories across 20 team namespaces, one Dockerfile each, long-tailed
    popularity. Pushes to main and pull requests (10% from forks, built ReadOnly)."""
    n = 300
    imgs = [image(rng, 240, 0.15, 1.5e9) for _ in range(n)]
    pick = zipf_pick(rng, n, 1.1)
    ns = lambda r: f"team-{r % 20:02d}"
    recs = []
    for t in arrivals(rng, 160, DAYS):
        r = pick()
        if rng.random() < 0.65:
            recs.append(build(t, ns(r), f"repo-{r:03d}:main", imgs[r], context=f"github.com/acme/repo-{r:03d}"))
        else:
            pr = int(rng.expovariate(1 / 3.0))  # a few open PRs per repo
            fork = rng.random() < 0.1
            recs.append(build(t, ns(r), f"repo-{r:03d}:pr-{pr}", imgs[r], restore=[f"repo-{r:03d}:main"],
                              context=f"github.com/acme/repo-{r:03d}", mode="ReadOnly" if fork else None))
    return cluster(6, 3, 60e9), recs


def branch_heavy(rng):
    """Four teams, 100 developers on 10 services. Each developer works on feature branches pushed several
    times over a few hours; the first build of a branch falls back to main's cache; merges
    rebuild main."""
    services = [image(rng, 600, 0.1, 6e9) for _ in range(10)]
    recs = []
    branch = 0
    for dev in range(100):
        t = 0.0
        while t < DAYS * DAY:
            if profile(t) < 0.5:  # next working morning, arriving between 8:00 and 10:30
                t = (t // DAY + (1 if (t % DAY) > 12 * 3600 else 0)) * DAY + rng.uniform(8, 10.5) * 3600
                continue
            s = rng.randrange(10)
            branch += 1
            key = f"svc-{s}:feature-{branch}"
            pushes = 2 + int(rng.expovariate(1 / 4.0))
            tp = t
            for _ in range(pushes):
                recs.append(build(tp, "product", key, services[s], restore=[f"svc-{s}:main"],
                                  context=f"github.com/acme/svc-{s}"))
                tp += rng.uniform(600, 3600)
            recs.append(build(tp + rng.uniform(60, 600), "product", f"svc-{s}:main", services[s],
                              context=f"github.com/acme/svc-{s}"))
            t = tp + rng.uniform(600, 7200)
    return cluster(6, 3, 150e9), recs


def merge_burst(rng):
    """A monorepo of 60 services with a steady trickle of pull-request builds; four times a
    day a release merge rebuilds every service on main at once (more builds than slots)."""
    n = 60
    imgs = [image(rng, 420, 0.12, 4e9) for _ in range(n)]
    key = lambda branch, s: f"shop:{branch}:svc-{s:02d}"
    recs = []
    for day in range(DAYS):
        for hour in (10, 12.5, 15, 17.5):
            t = day * DAY + hour * 3600 + rng.uniform(-600, 600)
            for s in range(n):
                recs.append(build(t + rng.uniform(0, 60), "shop", key("main", s), imgs[s],
                                  context=f"github.com/acme/shop/svc-{s:02d}"))
    for pr, t in enumerate(arrivals(rng, 40, DAYS)):
        s = rng.randrange(n)
        for push in range(1 + int(rng.expovariate(1 / 2.0))):
            recs.append(build(t + push * rng.uniform(900, 3600), "shop", key(f"pr-{pr}", s), imgs[s],
                              restore=[key("main", s)], context=f"github.com/acme/shop/svc-{s:02d}"))
    return cluster(8, 3, 120e9), recs


def churning_repos(rng, n, cold_median, cache_median, per_hour, days, ns, name, nodes, reclaim_hours):
    """Repositories with long-tailed popularity, pushes to main and branches falling back to
    main, on spot nodes each reclaimed every `reclaim_hours` on average and replaced (empty
    disk) 10 to 30 minutes later."""
    imgs = [image(rng, cold_median, 0.12, cache_median) for _ in range(n)]
    pick = zipf_pick(rng, n, 1.0)
    recs = []
    for t in arrivals(rng, per_hour, days):
        r = pick()
        repo = name(r)
        if rng.random() < 0.6:
            recs.append(build(t, ns(r), f"{repo}:main", imgs[r], context=f"github.com/acme/{repo}"))
        else:
            b = int(rng.expovariate(1 / 4.0))
            recs.append(build(t, ns(r), f"{repo}:branch-{b}", imgs[r], restore=[f"{repo}:main"],
                              context=f"github.com/acme/{repo}"))
    for i in range(nodes):
        t = rng.uniform(0, 4 * 3600)
        while t < days * DAY:
            recs.append({"kind": "node-down", "at": round(t, 1), "node": f"n{i+1}"})
            t += rng.uniform(600, 1800)
            recs.append({"kind": "node-up", "at": round(t, 1), "node": f"n{i+1}"})
            t += rng.expovariate(1 / (reclaim_hours * 3600))
    return recs


def node_churn(rng):
    """Spot nodes: each of 8 nodes is reclaimed every few hours and replaced (empty disk)
    10 to 30 minutes later, under steady traffic of 80 repositories with branches."""
    recs = churning_repos(rng, 80, 360, 3e9, 100, DAYS, lambda r: "ci", lambda r: f"app-{r:02d}", 8, 3)
    return cluster(8, 3, 80e9), recs


def scale(rng):
    """Not a built-in: the speed check of `hearth simulate` (about 100,000 builds). 1,000
    repositories in 40 namespaces with branches falling back to main, 40 spot nodes reclaimed
    every few hours, ten days."""
    recs = churning_repos(rng, 1000, 300, 2e9, 960, 10, lambda r: f"team-{r % 40:02d}",
                          lambda r: f"repo-{r:04d}", 40, 6)
    return cluster(40, 4, 100e9), recs


WORKLOADS = {
    "monorepo": monorepo,
    "many-repos": many_repos,
    "branch-heavy": branch_heavy,
    "merge-burst": merge_burst,
    "node-churn": node_churn,
}


def write(name, fn, out, days=DAYS):
    rng = random.Random(name)
    cl, recs = fn(rng)
    recs.sort(key=lambda r: r["at"])
    builds = sum(1 for r in recs if r["kind"] == "build")
    with open(out, "w") as f:
        f.write(f"# {name}: {' '.join(fn.__doc__.split())}\n")
        f.write(f"# {builds} builds over {days} days. Generated by config/workloads/generate.py (seeded).\n")
        f.write(json.dumps(cl, separators=(",", ":")) + "\n")
        for r in recs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    if args[:1] == ["scale"]:
        # python3 config/workloads/generate.py scale OUT.jsonl: the 100,000-build speed check.
        write("scale", scale, args[1] if len(args) > 1 else "scale.jsonl", days=10)
        sys.exit(0)
    names = [a for a in args if not a.startswith("--")] or list(WORKLOADS)
    for name in names:
        write(name, WORKLOADS[name], os.path.join(here, f"{name}.jsonl"))
