"""The owner's computing preferences (modelled on BOINC's) and the rule that turns
them into the site's mode. Pure: no Redis, no clock, no psutil; the caller passes
what it measured, so the rule is tested with any clock and any load."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RunMode = Literal["always", "when_idle", "never"]
SiteState = Literal["running", "paused"]

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Hours(BaseModel):
    """Run only between start and end (local wall clock, "HH:MM"); end before start
    means the window crosses midnight (22:00-07:00)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str
    end: str

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        # "22:00-07:00", as typed on the command line or in an environment variable
        if isinstance(value, str):
            start, sep, end = value.partition("-")
            if not sep:
                raise ValueError(f"hours {value!r} is not START-END as HH:MM-HH:MM")
            return {"start": start.strip(), "end": end.strip()}
        return value

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00-23:59)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Hours:
        if self.start == self.end:
            raise ValueError(f"hours {self.start}-{self.end} is an empty window (start equals end)")
        return self

    def contains(self, moment: time) -> bool:
        start, end = _parse(self.start), _parse(self.end)
        now = moment.replace(second=0, microsecond=0, tzinfo=None)
        if start < end:
            return start <= now < end
        return now >= start or now < end  # crosses midnight

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def _parse(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


class Preferences(BaseModel):
    """What the owner lends. None in an optional field means "no such rule"."""

    model_config = ConfigDict(extra="forbid")

    run_mode: RunMode = "always"
    suspend_above_cpu_percent: float | None = Field(
        None, gt=0, le=100, description="Non-task CPU use above this % suspends the tasks."
    )
    hours: Hours | None = None
    cpu_share_percent: float = Field(100.0, ge=1, le=100)
    memory_share_percent: float = Field(100.0, ge=1, le=100)
    gpus: list[str] | None = Field(None, description="GPU indices or UUIDs to lend; None lends all.")
    keep_free_disk_gb: float = Field(0.0, ge=0)
    paused_until: datetime | None = Field(None, description="Set by `pause --for`; past it the pause ends.")
    # Stepping aside for the machine (core/step_aside.py): on battery, or too hot.
    pause_on_battery: bool = Field(True, description="Pause while the machine runs on its battery.")
    max_cpu_temperature_c: float | None = Field(
        None, gt=0, le=150, description="CPU tasks pause while the CPU is hotter than this (°C)."
    )
    max_gpu_temperature_c: float | None = Field(
        None, gt=0, le=150, description="GPU tasks pause while one of their GPUs is hotter than this (°C)."
    )
    temperature_margin_c: float = Field(
        5.0, ge=0, le=50, description="After a heat pause, resume only this many °C below the limit."
    )
    resume_after_seconds: float = Field(
        60.0, ge=0, le=3600, description="After a battery or heat pause, resume once clear this long."
    )
    release_memory_after_minutes: float | None = Field(
        None,
        gt=0,
        description="A pause longer than this checkpoints the running tasks, stops them and releases "
        "their memory; they resume when the site runs again. None keeps them frozen in memory.",
    )

    @field_validator("gpus")
    @classmethod
    def _gpu_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [item.strip() for item in value]
        for item in cleaned:
            if not item or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,80}", item):
                raise ValueError(f"gpu {item!r} is not a GPU index or UUID")
        return cleaned

    @field_validator("paused_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class SiteMode(BaseModel):
    """Whether the site's tasks run now, and why not, in the owner's words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: SiteState
    reason: str = ""

    @property
    def paused(self) -> bool:
        return self.state == "paused"


RUNNING = SiteMode(state="running", reason="")


def senses_the_machine(prefs: Preferences) -> bool:
    """Does a rule read what the machine is doing (its CPU, its owner's input)? Then
    it must be judged often; otherwise only the preferences and the clock decide."""
    return prefs.run_mode == "when_idle" or prefs.suspend_above_cpu_percent is not None


def decide(
    prefs: Preferences,
    now: datetime,
    non_task_cpu_percent: float,
    owner_idle_seconds: float | None,
    aside: str | None = None,
) -> SiteMode:
    """The first rule that pauses wins, in the order an owner thinks of them:
    an explicit pause, the hours, the machine's own need (`aside`: why the site
    steps aside for battery or heat, from core/step_aside.py; None: it need not),
    then the owner using the machine.

    `now` is a local wall-clock moment (aware or naive); `owner_idle_seconds` is how
    long no keyboard/mouse input was seen, None where that cannot be known (a
    headless server): then "using the machine" is judged by non-task CPU alone."""
    if prefs.run_mode == "never":
        return SiteMode(state="paused", reason="paused by the owner (run mode: never)")
    if prefs.paused_until is not None:
        until = prefs.paused_until
        moment = now if now.tzinfo is not None else now.replace(tzinfo=until.tzinfo)
        if moment < until:
            local = until.astimezone(now.tzinfo) if now.tzinfo is not None else until
            return SiteMode(state="paused", reason=f"paused by the owner until {local:%H:%M}")
    if prefs.hours is not None and not prefs.hours.contains(now.time()):
        return SiteMode(state="paused", reason=f"outside the hours {prefs.hours}")
    if aside is not None:
        return SiteMode(state="paused", reason=aside)
    limit = prefs.suspend_above_cpu_percent
    if limit is not None and non_task_cpu_percent > limit:
        return SiteMode(
            state="paused",
            reason=f"the owner is using the machine (CPU {non_task_cpu_percent:.0f} % > {limit:g} %)",
        )
    if prefs.run_mode == "when_idle":
        if owner_idle_seconds is not None and owner_idle_seconds < WHEN_IDLE_AFTER_SECONDS:
            return SiteMode(
                state="paused",
                reason=f"the owner is using the machine (input {owner_idle_seconds:.0f} s ago)",
            )
        busy_limit = limit if limit is not None else WHEN_IDLE_CPU_PERCENT
        if non_task_cpu_percent > busy_limit:
            return SiteMode(
                state="paused",
                reason=f"the owner is using the machine (CPU {non_task_cpu_percent:.0f} % > {busy_limit:g} %)",
            )
    return RUNNING


# "Not using the machine", as BOINC's default: no input for 3 minutes, and where no
# input can be seen, non-task CPU at most this share of the host.
WHEN_IDLE_AFTER_SECONDS = 180.0
WHEN_IDLE_CPU_PERCENT = 25.0
