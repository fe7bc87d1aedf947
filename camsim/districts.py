"""The 25 autonomous districts (자치구) of Seoul: ASCII slug <-> Korean name.

A plain dict and two functions so it can move into `contract/` unchanged.
"""

from __future__ import annotations

DISTRICTS: dict[str, str] = {
    "jongno": "종로구",
    "jung": "중구",
    "yongsan": "용산구",
    "seongdong": "성동구",
    "gwangjin": "광진구",
    "dongdaemun": "동대문구",
    "jungnang": "중랑구",
    "seongbuk": "성북구",
    "gangbuk": "강북구",
    "dobong": "도봉구",
    "nowon": "노원구",
    "eunpyeong": "은평구",
    "seodaemun": "서대문구",
    "mapo": "마포구",
    "yangcheon": "양천구",
    "gangseo": "강서구",
    "guro": "구로구",
    "geumcheon": "금천구",
    "yeongdeungpo": "영등포구",
    "dongjak": "동작구",
    "gwanak": "관악구",
    "seocho": "서초구",
    "gangnam": "강남구",
    "songpa": "송파구",
    "gangdong": "강동구",
}

_BY_KOREAN: dict[str, str] = {korean: slug for slug, korean in DISTRICTS.items()}


def korean_name(slug: str) -> str:
    """`gangnam` -> `강남구`; KeyError for an unknown slug."""
    return DISTRICTS[slug]


def slug_for(korean: str) -> str:
    """`강남구` -> `gangnam`; KeyError for an unknown name."""
    return _BY_KOREAN[korean]
