"""An incident as the policy judges it and as the API shows it: its grant (radius now, positions, expiry) and
the cameras the grant covers, nearest first."""

from __future__ import annotations

from collector.access.decision import CameraPlace, IncidentView
from collector.audit.chain import AuditSubject
from collector.index import incidents as db
from collector.index import queries
from collector.index.geo import district_at
from collector.index.spatial import Neighbour, haversine_m
from collector.index.store import CameraView
from collector.index.tx import Tx
from collector.platform.errors import ApiError, not_found
from collector.platform.guard import Caller
from collector.platform.nearby import near
from collector.platform.schemas import Grant, Incident, NearbyCamera, PositionOut, utc


def view(row: db.IncidentRow) -> IncidentView:
    """The incident as the decision judges it; its time limit is judged there (`incident_expired`)."""
    state = "closed" if row.closed_at is not None and row.closed_at < row.expires_at else "open"
    return IncidentView(
        incident_id=row.incident_id,
        agency=row.agency,
        service=row.service,  # type: ignore[arg-type]  # stored from a validated Service
        district=row.district,
        state=state,  # type: ignore[arg-type]  # "open" | "closed"
        opened_at=row.opened_at,
        expires_at=row.expires_at,
        radius_m=row.radius_m,
        positions=tuple((p.lat, p.lon, p.at) for p in row.positions),
    )


def load(tx: Tx, incident_id: str, *, lock: bool = False) -> db.IncidentRow:
    row = db.incident(tx, incident_id, lock=lock)
    if row is None:
        raise not_found("incident", incident_id)
    return row


def shown(c: Caller, row: db.IncidentRow, *, with_grant: bool = True) -> Incident:
    state, reason = row.state(c.now)
    grant = None
    if with_grant:
        agency = c.p.access.policy.agencies.get(row.agency)
        grant = Grant(
            scope=agency.scope if agency is not None else "none",
            radius_m=c.p.access.grant_radius_m(view(row), c.now),
            positions=[
                PositionOut(lat=p.lat, lon=p.lon, at=p.at, district=p.district) for p in row.positions
            ],
            expires_at=row.expires_at,
        )
    closed_at = (
        row.closed_at if row.closed_at is not None else (row.expires_at if reason == "expired" else None)
    )
    return Incident(
        incident_id=row.incident_id,
        incident_no=row.incident_no,
        agency=row.agency,
        service=row.service,
        type=row.kind,
        purpose=row.purpose,
        district=row.district,
        occurred_at=row.occurred_at,
        opened_at=row.opened_at,
        opened_by=row.opened_by,
        state=state,
        close_reason=reason,
        closed_at=utc(closed_at),
        grant=grant,
    )


def nearby(c: Caller, row: db.IncidentRow, limit: int) -> list[NearbyCamera]:
    """The cameras the incident's grant covers, nearest to any of its positions first."""
    return [
        NearbyCamera(
            camera_id=n.camera_id,
            name=item.name,
            district=n.district,
            distance_m=round(n.distance_m, 1),
            bearing_deg=round(n.bearing_deg, 1),
            lat=item.lat,
            lon=item.lon,
            state=item.state,
            last_seen=utc(item.last_seen),
            agent_online=item.agent_online,
        )
        for n, item in nearby_items(c, row, limit)
    ]


def nearby_items(c: Caller, row: db.IncidentRow, limit: int) -> list[tuple[Neighbour, CameraView]]:
    """`nearby` as found in the spatial index with each camera's row (one query for all of them)."""
    agency = c.p.access.policy.agencies.get(row.agency)
    if agency is None or c.p.cameras is None:
        return []
    radius = c.p.access.grant_radius_m(view(row), c.now)
    districts = None if agency.districts == "all" else agency.districts
    max_m = None if agency.scope == "own_district" else radius
    found = near(c.p.cameras.index, [(p.lat, p.lon) for p in row.positions], limit, max_m, districts)
    with c.p.store().reading() as tx:
        items = queries.cameras_by_id(tx, (n.camera_id for n in found))
    # A camera gone from the index since the spatial index was built is left out.
    return [(n, items[n.camera_id]) for n in found if n.camera_id in items]


def place(row: db.IncidentRow, item: CameraView) -> CameraPlace:
    """A camera as the decision sees it: its district and its distance to the incident's nearest position."""
    if item.lat is None or item.lon is None or not row.positions:
        return CameraPlace(item.camera_id, item.district, None)
    distance = min(haversine_m(p.lat, p.lon, item.lat, item.lon) for p in row.positions)
    return CameraPlace(item.camera_id, item.district, distance)


def subjects(cameras: list[NearbyCamera]) -> list[AuditSubject]:
    return [AuditSubject(camera_id=cam.camera_id, district=cam.district) for cam in cameras]


def district_of(lat: float, lon: float, field: str = "lat") -> str:
    """The district of a position from Seoul's boundaries; 422 outside_service_area outside them."""
    district = district_at(lat, lon)
    if district is None:
        raise ApiError(422, "outside_service_area", f"({lat}, {lon}) is outside Seoul's 25 districts", field)
    return district
