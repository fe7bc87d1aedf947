"""The 20 nearest cameras to a point, in process, against PostGIS's KNN on a GiST index.

    python -m bench.nearest [--quick] [--json]

Method: two fleets. The 45,317 real Seoul cameras (camsim/data/seoul_cctv.csv, each row repeated `count`
times; the second and later cameras of a place moved by up to 3 m, deterministically, so that no two share a
point), and the same plus synthetic cameras at random places inside Seoul's district boundaries up to 68,000,
the number Seoul reported. Query points are random places inside Seoul (the same for every engine). Ours:
`collector.index.spatial.NearestIndex.nearest(lat, lon, 20)` in this process, one query at a time, each timed
with perf_counter. Each answer is checked against a brute-force scan of every camera (ids in order must be
identical). Anchor: PostgreSQL 15 + PostGIS 3 (Debian `postgresql-15-postgis-3`) in a throwaway cluster
on 127.0.0.1, the cameras in a `geography(Point, 4326)` column with a GiST index, queried with
`ORDER BY geog <-> point LIMIT 20` (the sphere distance, as ours) through a prepared statement over one
psycopg connection, each query timed from this process the way the platform would call it. Its answers are
compared with ours: the same camera ids in the same order, distances within 1 cm (both use the sphere of
radius (2a + b) / 3 of WGS84). Closing ratio: PostGIS p99 / ours p99 for the 68,000 cameras (above
1: ours is faster).
"""

from __future__ import annotations

import csv
import math
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import psycopg

from bench.common import Report, parser
from camsim.ledger import BUNDLED_POSITIONS
from collector.index.geo import district_at
from collector.index.spatial import EARTH_RADIUS_M, CameraPoint, NearestIndex, haversine_many
from contract.districts import slug_for
from tests.collector.pg import PgService, available

K = 20
CITY = 68_000
SEOUL_BOX = (37.42, 37.71, 126.76, 127.19)  # south, north, west, east of the district boundaries
JITTER_M = 3.0
Answer = list[tuple[str, float]]  # (camera id, metres), nearest first


def real_cameras() -> list[CameraPoint]:
    rng = random.Random(45_317)
    out: list[CameraPoint] = []
    with BUNDLED_POSITIONS.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            lat, lon, district = float(row["lat"]), float(row["lon"]), slug_for(row["district"])
            for copy in range(int(row["count"])):
                dlat, dlon = (0.0, 0.0) if copy == 0 else _jitter(rng, lat)
                out.append(CameraPoint(f"cam-{len(out):05d}", district, lat + dlat, lon + dlon))
    return out


def _jitter(rng: random.Random, lat: float) -> tuple[float, float]:
    metres, angle = rng.uniform(0.5, JITTER_M), rng.uniform(0, 2 * math.pi)
    per_degree = EARTH_RADIUS_M * math.pi / 180
    return metres * math.cos(angle) / per_degree, metres * math.sin(angle) / (
        per_degree * math.cos(math.radians(lat))
    )


def places_in_seoul(n: int, seed: int) -> list[tuple[float, float, str]]:
    """`n` random (lat, lon, district) inside Seoul's district boundaries."""
    rng = random.Random(seed)
    out: list[tuple[float, float, str]] = []
    south, north, west, east = SEOUL_BOX
    while len(out) < n:
        lat, lon = rng.uniform(south, north), rng.uniform(west, east)
        district = district_at(lat, lon)
        if district is not None:
            out.append((lat, lon, district))
    return out


def city(real: list[CameraPoint]) -> list[CameraPoint]:
    extra = places_in_seoul(CITY - len(real), seed=68_000)
    return real + [CameraPoint(f"syn-{i:05d}", d, lat, lon) for i, (lat, lon, d) in enumerate(extra)]


def timed(
    query: Callable[[float, float], Answer], points: list[tuple[float, float]]
) -> tuple[list[float], list[Answer]]:
    """Per-query seconds and answers."""
    seconds, answers = [], []
    for lat, lon in points:
        start = time.perf_counter()
        answers.append(query(lat, lon))
        seconds.append(time.perf_counter() - start)
    return seconds, answers


def ours(cameras: list[CameraPoint]) -> Callable[[float, float], Answer]:
    index = NearestIndex.build(cameras)
    return lambda lat, lon: [(n.camera_id, n.distance_m) for n in index.nearest(lat, lon, K)]


def brute_force(cameras: list[CameraPoint]) -> Callable[[float, float], Answer]:
    lats, lons = np.array([c.lat for c in cameras]), np.array([c.lon for c in cameras])
    ids = np.array([c.camera_id for c in cameras])

    def scan(lat: float, lon: float) -> Answer:
        d = haversine_many(lat, lon, lats, lons)
        near = np.nonzero(d <= np.partition(d, K - 1)[K - 1])[0]  # only to sort fewer: ties stay in
        order = near[np.lexsort((ids[near], d[near]))][:K]
        return [(str(ids[i]), float(d[i])) for i in order]

    return scan


def postgis(conn: psycopg.Connection, cameras: list[CameraPoint]) -> Callable[[float, float], Answer]:
    conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    conn.execute("DROP TABLE IF EXISTS cams")
    conn.execute("CREATE TABLE cams (camera_id TEXT PRIMARY KEY, geog geography(Point, 4326) NOT NULL)")
    with conn.cursor().copy("COPY cams (camera_id, geog) FROM STDIN") as copy:
        for c in cameras:
            copy.write_row((c.camera_id, f"SRID=4326;POINT({c.lon!r} {c.lat!r})"))
    conn.execute("CREATE INDEX cams_geog ON cams USING gist (geog)")
    conn.execute("ANALYZE cams")
    conn.commit()
    sql = (
        "SELECT camera_id, ST_Distance(geog, q, false) FROM cams, "
        "(SELECT ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography AS q) p ORDER BY geog <-> q LIMIT %s"
    )

    def knn(lat: float, lon: float) -> Answer:
        rows = conn.execute(sql, (lon, lat, K), prepare=True).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    return knn


def uses_gist(conn: psycopg.Connection) -> bool:
    plan = conn.execute(
        "EXPLAIN SELECT camera_id FROM cams ORDER BY geog <-> "
        "ST_SetSRID(ST_MakePoint(127.0, 37.5), 4326)::geography LIMIT 20"
    ).fetchall()
    return any("cams_geog" in row[0] for row in plan)


def mismatches(a: list[Answer], b: list[Answer], tolerance_m: float) -> int:
    """Queries whose ids differ in order, or whose distances differ by more than `tolerance_m`."""
    bad = 0
    for x, y in zip(a, b, strict=True):
        same_ids = [i for i, _ in x] == [i for i, _ in y]
        bad += not (
            same_ids and all(abs(dx - dy) <= tolerance_m for (_, dx), (_, dy) in zip(x, y, strict=True))
        )
    return bad


def p(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def measure(
    name: str,
    cameras: list[CameraPoint],
    points: list[tuple[float, float]],
    conn: psycopg.Connection,
    report: Report,
) -> tuple[float, float]:
    """(ours p99 ms, PostGIS p99 ms) for one fleet; every figure is added to the report."""
    report.add(f"{name}_cameras", len(cameras))
    query = ours(cameras)
    timed(query, points[:200])  # warm up: caches, branch predictors, lazy imports
    our_s, our_answers = timed(query, points)
    _, reference = timed(brute_force(cameras), points)
    knn = postgis(conn, cameras)
    report.add(f"{name}_postgis_uses_gist_index", uses_gist(conn))
    timed(knn, points[:200])
    pg_s, pg_answers = timed(knn, points)
    report.add(f"{name}_ours_p50_ms", round(p(our_s, 0.5), 3))
    report.add(f"{name}_ours_p99_ms", round(p(our_s, 0.99), 3))
    report.add(f"{name}_ours_mean_ms", round(statistics.mean(our_s) * 1000, 3))
    report.add(f"{name}_postgis_p50_ms", round(p(pg_s, 0.5), 3))
    report.add(f"{name}_postgis_p99_ms", round(p(pg_s, 0.99), 3))
    report.add(f"{name}_ours_vs_brute_force_mismatches", mismatches(our_answers, reference, 0.0))
    report.add(f"{name}_ours_vs_postgis_mismatches", mismatches(our_answers, pg_answers, 0.01))
    worst = max(
        abs(a - b)
        for x, y in zip(our_answers, pg_answers, strict=True)
        for (_, a), (_, b) in zip(x, y, strict=False)
    )
    report.add(f"{name}_largest_distance_difference_to_postgis_m", round(worst, 6))
    return p(our_s, 0.99), p(pg_s, 0.99)


def main(argv: list[str] | None = None) -> int:
    args = parser("nearest", __doc__.splitlines()[0] if __doc__ else "").parse_args(argv)
    if not available():
        raise SystemExit("PostgreSQL 15 (Debian postgresql-15, postgresql-15-postgis-3) and root are needed")
    queries = 500 if args.quick else 5_000
    report = Report("nearest")
    report.add("k", K)
    report.add("queries", queries)
    points = [(lat, lon) for lat, lon, _ in places_in_seoul(queries, seed=112)]
    real = real_cameras()
    with PgService().start() as pg, psycopg.connect(pg.url) as conn:
        measure("real", real, points, conn, report)
        our_p99, pg_p99 = measure("city", city(real), points, conn, report)
    bad = [k for k, v in report.figures.items() if k.endswith("brute_force_mismatches") and v]
    report.finish(f"ours p99 {our_p99:.3f} ms", f"PostGIS p99 {pg_p99:.3f} ms", pg_p99 / our_p99, args.json)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
