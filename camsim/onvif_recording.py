"""The ONVIF Search and Replay services (Profile G) of a simulated camera or recorder.

Search: FindRecordings (scope: IncludedSources / IncludedRecordings tokens; none = all) returns a search
token; GetRecordingSearchResults returns the matching recordings' information (source, earliest and latest
recording, one video track) and the search state; EndSearch; GetRecordingSummary; GetRecordingInformation.
Replay: GetReplayUri (the device's own RTSP address, ``/replay/<token>``, camsim/replay.py).
Unknown tokens are SOAP faults (ter:InvalidArgVal / ter:NoRecording or ter:InvalidToken).

Quirks (camsim/model.py Personality): ``search_results_paged`` answers the first GetRecordingSearchResults
of a search with SearchState "Searching" and no results (clients must poll until "Completed");
``recording_times_without_zone`` writes times without the "Z" (meant as UTC).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from lxml import etree

from camsim import soap
from camsim.model import CameraSpec
from camsim.recording import Archive, Recording
from camsim.replay import replay_uri
from camsim.soap import SoapError, SoapRequest, text

SEARCH_PATH = "/onvif/search_service"
REPLAY_PATH = "/onvif/replay_service"
MAX_SEARCHES = 64

_INFORMATION = (
    "<{tag}><tt:RecordingToken>{token}</tt:RecordingToken><tt:Source><tt:SourceId>{source}</tt:SourceId>"
    "<tt:Name>{name}</tt:Name><tt:Location>{location}</tt:Location><tt:Description>{name}</tt:Description>"
    "<tt:Address>{source}</tt:Address></tt:Source><tt:EarliestRecording>{earliest}</tt:EarliestRecording>"
    "<tt:LatestRecording>{latest}</tt:LatestRecording><tt:Content>{name}</tt:Content><tt:Track>"
    "<tt:TrackToken>VIDEO001</tt:TrackToken><tt:TrackType>Video</tt:TrackType><tt:Description>Video"
    "</tt:Description><tt:DataFrom>{earliest}</tt:DataFrom><tt:DataTo>{latest}</tt:DataTo></tt:Track>"
    "<tt:RecordingStatus>Recording</tt:RecordingStatus></{tag}>"
)


@dataclass
class _Search:
    recordings: list[Recording]
    polls: int = 0


@dataclass
class RecordingService:
    """Search and Replay of one device; ``archive`` holds the recordings, ``spec`` says which it serves."""

    spec: CameraSpec
    archive: Archive
    _searches: OrderedDict[str, _Search] = field(default_factory=OrderedDict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def serves(self) -> bool:
        return bool(self.archive.on_device(self.spec))

    def _time(self, moment: float) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        return stamp if self.spec.personality.recording_times_without_zone else stamp + "Z"

    def _information(self, recording: Recording, tag: str) -> str:
        now = self.archive.clock() + self.spec.faults.clock_skew_s
        token = recording.token + ("-gone" if self.spec.faults.search_stale_tokens else "")
        return _INFORMATION.format(
            tag=tag, token=text(token), source=text(recording.source_id), name=text(recording.name),
            location=text(self.spec.district), earliest=self._time(recording.earliest(now)),
            latest=self._time(now),
        )  # fmt: skip

    def _recording(self, token: str) -> Recording:
        for recording in self.archive.on_device(self.spec):
            if recording.token == token:
                return recording
        raise soap.invalid_arg("ter:NoRecording", f"No recording with token {token!r}")

    # --- Search ---

    def find_recordings(self, req: SoapRequest) -> str:
        scope = _child(req.body, "Scope")
        sources = set(_texts(scope, "IncludedSources", "Token")) if scope is not None else set()
        tokens = set(_texts(scope, "IncludedRecordings")) if scope is not None else set()
        found = [
            r for r in self.archive.on_device(self.spec)
            if (not sources or r.source_id in sources) and (not tokens or r.token in tokens)
        ]  # fmt: skip
        search_token = f"search-{next(self._ids)}"
        self._searches[search_token] = _Search(found)
        while len(self._searches) > MAX_SEARCHES:
            self._searches.popitem(last=False)
        answer = f"<tse:SearchToken>{search_token}</tse:SearchToken>"
        return f"<tse:FindRecordingsResponse>{answer}</tse:FindRecordingsResponse>"

    def get_recording_search_results(self, req: SoapRequest) -> str:
        token = soap.child_text(req.body, "SearchToken") or ""
        search = self._searches.get(token)
        if search is None:
            raise soap.invalid_arg("ter:InvalidToken", f"No search with token {token!r}")
        search.polls += 1
        paged = self.spec.personality.search_results_paged and search.polls == 1
        state = "Searching" if paged else "Completed"
        found = [] if paged else search.recordings
        infos = "".join(self._information(r, "tt:RecordingInformation") for r in found)
        return (
            "<tse:GetRecordingSearchResultsResponse><tse:ResultList>"
            f"<tt:SearchState>{state}</tt:SearchState>{infos}</tse:ResultList></tse:GetRecordingSearchResultsResponse>"
        )

    def end_search(self, req: SoapRequest) -> str:
        self._searches.pop(soap.child_text(req.body, "SearchToken") or "", None)
        endpoint = "<tse:Endpoint>1970-01-01T00:00:00Z</tse:Endpoint>"
        return f"<tse:EndSearchResponse>{endpoint}</tse:EndSearchResponse>"

    def get_recording_summary(self, _: SoapRequest) -> str:
        recordings = self.archive.on_device(self.spec)
        now = self.archive.clock() + self.spec.faults.clock_skew_s
        earliest = min((r.earliest(now) for r in recordings), default=now)
        return (
            f"<tse:GetRecordingSummaryResponse><tse:Summary><tt:DataFrom>{self._time(earliest)}</tt:DataFrom>"
            f"<tt:DataUntil>{self._time(now)}</tt:DataUntil><tt:NumberRecordings>{len(recordings)}"
            "</tt:NumberRecordings></tse:Summary></tse:GetRecordingSummaryResponse>"
        )

    def get_recording_information(self, req: SoapRequest) -> str:
        recording = self._recording(soap.child_text(req.body, "RecordingToken") or "")
        info = self._information(recording, "tse:RecordingInformation")
        return f"<tse:GetRecordingInformationResponse>{info}</tse:GetRecordingInformationResponse>"

    # --- Replay ---

    def get_replay_uri(self, req: SoapRequest, rtsp_port: int) -> str:
        recording = self._recording(soap.child_text(req.body, "RecordingToken") or "")
        uri = replay_uri(self.spec.host, rtsp_port, recording.token)
        return f"<trp:GetReplayUriResponse><trp:Uri>{text(uri)}</trp:Uri></trp:GetReplayUriResponse>"


def _child(el: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == name), None)


def _texts(el: etree._Element, *path: str) -> list[str]:
    """Texts of all descendants at ``path`` (local names), e.g. every IncludedSources/Token."""
    nodes = [el]
    for name in path:
        nodes = [c for n in nodes for c in n if isinstance(c.tag, str) and etree.QName(c).localname == name]
    return [(n.text or "").strip() for n in nodes]


def not_served(action: str) -> SoapError:
    return soap.action_not_supported(action)
