"""Planning ``python -m sharding apply``: from the applied topology to the edited shard file, safely.

Pure: ``plan`` compares the topology the running cluster was last brought to
with the file the user edited, refuses an unsafe edit with the reason, and
says what must be checked before nginx may route by the new file. The checks
and actions themselves (databases, writers, aggregators, nginx) are I/O and
live with the entry host's runner (sharding/local/apply.py); the order is
fixed there, and is the one safe order: databases and writers first, then
every aggregator reads every shard, and only then nginx routes to them.

A shard is identified by its database, not its name or DSN: PostgreSQL's
``system_identifier`` and the schema's ``shard_uuid`` (common/schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sharding.config import ConfigError, Shard, Topology, database_of, redact_password

Identity = tuple[str, str]  # (system_identifier, shard_uuid)


class Refused(ConfigError):
    """An edit of the shard file that ``apply`` will not make; the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """What ``apply`` checks and changes, in the order it does it."""

    current: Topology
    desired: Topology
    new_shards: tuple[Shard, ...]  # database reachable, schema, not another shard, writers ready
    moved_shards: tuple[Shard, ...]  # a new DSN: it must reach the same database identity
    removed_shards: tuple[Shard, ...]  # retired ones only; must hold no data
    writers_to_check: tuple[Shard, ...]  # active shards with writers nginx did not route to before
    retired: tuple[str, ...]
    new_aggregators: tuple[str, ...]
    removed_aggregators: tuple[str, ...]

    @property
    def changes_nothing(self) -> bool:
        return self.current == self.desired

    def summary(self) -> list[str]:
        """One line per change, for the user."""
        lines = [f"new shard {s.name} ({redact_password(s.dsn)}, writers {', '.join(s.writers)})"
                 for s in self.new_shards]
        lines += [f"shard {s.name} at a new DSN ({redact_password(s.dsn)})" for s in self.moved_shards]
        lines += [f"shard {name} retired" for name in self.retired]
        lines += [f"shard {s.name} removed" for s in self.removed_shards]
        lines += [f"shard {s.name} writers: {', '.join(s.writers)}" for s in self.writers_to_check
                  if s not in self.new_shards]
        lines += [f"new aggregator {a}" for a in self.new_aggregators]
        lines += [f"aggregator {a} removed" for a in self.removed_aggregators]
        return lines


def plan(current: Topology, desired: Topology, removed_names: frozenset[str] = frozenset()) -> Plan:
    """The changes from ``current`` to ``desired``; Refused for an unsafe edit."""
    before = {s.name: s for s in current.shards}
    after = {s.name: s for s in desired.shards}
    refuse_renames(before, after)
    refuse_removals(before, after)
    reused = sorted(removed_names & (set(after) - set(before)))
    if reused:
        raise Refused(f"shard name {reused[0]!r} belonged to a shard that was removed: a name is never reused "
                      "(its rows would be taken for the old shard's); give the new shard another name")
    new = tuple(s for s in desired.shards if s.name not in before)
    moved = tuple(s for s in desired.shards if s.name in before and s.dsn != before[s.name].dsn)
    return Plan(
        current=current,
        desired=desired,
        new_shards=new,
        moved_shards=moved,
        removed_shards=tuple(s for s in current.shards if s.name not in after),
        writers_to_check=tuple(s for s in desired.active_shards if new_writers(s, before.get(s.name))),
        retired=tuple(s.name for s in desired.shards if not s.active and s.name in before and before[s.name].active),
        new_aggregators=tuple(a for a in desired.aggregators if a not in current.aggregators),
        removed_aggregators=tuple(a for a in current.aggregators if a not in desired.aggregators),
    )


def new_writers(shard: Shard, before: Shard | None) -> bool:
    """Whether nginx would route to a writer of ``shard`` it did not route to before."""
    if before is None or not before.active:
        return True
    return bool(set(shard.writers) - set(before.writers))


def refuse_removals(before: dict[str, Shard], after: dict[str, Shard]) -> None:
    for name, shard in before.items():
        if name not in after and shard.active:
            raise Refused(f"shard {name} is missing from the file: a shard holding data is retired, not removed "
                          f"(its rows are still counted). Set its \"state\" to \"retired\" instead")


def refuse_renames(before: dict[str, Shard], after: dict[str, Shard]) -> None:
    """A new name for a database that an existing shard already names is a rename: refused."""
    databases = {database_of(s.dsn): name for name, s in before.items()}
    for name, shard in after.items():
        owner = databases.get(database_of(shard.dsn))
        if owner is not None and owner != name:
            raise Refused(f"shard {name} names the database of shard {owner} ({redact_password(shard.dsn)}): "
                          f"a shard is never renamed; keep the name {owner!r}")


def same_database_refusal(shard: Shard, identity: Identity, known: dict[str, Identity]) -> Refused | None:
    """Refused if a new shard's database is already another shard (by identity, whatever its DSN)."""
    for name, other in known.items():
        if name != shard.name and other == identity:
            return Refused(f"shard {shard.name}'s database is already shard {name} (system_identifier {identity[0]}, "
                           f"shard_uuid {identity[1]}): it would be counted twice. Point it at a new database")
    return None


def moved_refusal(shard: Shard, identity: Identity, was: Identity | None) -> Refused | None:
    """Refused unless a shard's new DSN reaches the database it had (a promoted standby at a new address)."""
    if was is None:
        return Refused(f"shard {shard.name} has a new DSN and its database's identity was never recorded: "
                       "apply cannot tell that it is the same database")
    if identity != was:
        return Refused(f"shard {shard.name}'s new DSN {redact_password(shard.dsn)} reaches another database "
                       f"(system_identifier {identity[0]}, shard_uuid {identity[1]}; it was {was[0]}, {was[1]}): "
                       "an existing shard is never pointed at another database. Add a new shard instead")
    return None
