from __future__ import annotations

from agent.credentials import CredentialStore
from agent.ledger import load_ledger

HEADER = "camera_id,name,address_text,lat,lon,host,onvif_port,rtsp_port,vendor_hint,credentials_ref\n"


def test_bad_rows_are_reported_with_line_and_field_and_the_rest_loads(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text(
        HEADER
        + "cam-1,Gate,서울특별시 강남구 테헤란로 1,37.5,127.03,127.20.0.1,80,554,hikvision,cam/cam-1\n"
        + "cam-2,Bad,x,91.0,127.0,127.20.0.2,80,554,,\n"
        + "cam-3,NoPort,x,37.5,127.0,127.20.0.3,eighty,554,,\n"
        + "cam-1,Dup,x,37.5,127.0,127.20.0.4,80,554,,\n"
        + "cam-5,Ok,x,,,127.20.0.5,8080,8554,,\n",
        encoding="utf-8",
    )
    cameras, problems = load_ledger(path)
    assert [c.camera_id for c in cameras] == ["cam-1", "cam-5"]
    assert cameras[1].lat is None and cameras[1].onvif_port == 8080
    found = {(p.line, p.field) for p in problems}
    assert found == {(3, "lat"), (4, "onvif_port"), (5, "camera_id")}
    assert all(str(path) in str(p) for p in problems)


def test_ledger_without_required_columns_loads_nothing_and_says_why(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text("id,name\n1,x\n")
    cameras, problems = load_ledger(path)
    assert cameras == [] and problems[0].field == "camera_id,host"


def test_credentials_come_from_the_secrets_file_and_never_print(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[credentials."cam/cam-1"]\nusername = "admin"\npassword = "pw-1"\n')
    store = CredentialStore.from_file(secrets)
    creds = store.get("cam/cam-1")
    assert creds is not None and creds.password.get_secret_value() == "pw-1"
    assert "pw-1" not in repr(creds)
    assert store.get("cam/unknown") is None
