"""A2 with the validity in force (docs/rules.md, "The numbers"): "A change applies from
the start that makes it: ... and to every invitation (an invitation's expiry is its
sending time plus the validity in force, so a pending one's moves with it)".

The directory kept the expiry stored when an invitation was sent, so a restart with
``invitation_validity = "30d"`` left one sent under 7 days expiring on day 7. A
restored pending invitation now expires its send time plus the validity in force;
one recorded expired stays expired, and an accepted one is as it was."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.changes import Changes
from server.domain.directory import (
    Directory,
    Invitation,
    InvitationState,
    Member,
    MemberState,
    Notification,
    User,
)
from server.domain.errors import InvitationExpired
from tests.domain.test_directory import DAY, SECOND, T0, World, of


def _stored(world: World) -> list[object]:
    """Everything the directory holds, as the store would load it (the directory's
    own objects: a restore must not change the rows it is given)."""
    changes = Changes()
    directory = world.directory
    for user_id in sorted(directory.user_ids()):
        changes.upsert(directory.user(user_id))
        for member in directory.teams_of(user_id):
            changes.upsert(member)
            invitation = directory.invitation(member.invitation_id)
            if invitation is not None:
                changes.upsert(invitation)
    for notification in directory.list_notifications():
        changes.upsert(notification)
    return list(changes.items)


def _restored(world: World, validity: timedelta) -> Directory:
    stored = _stored(world)
    return Directory.restore(
        of(User, stored),
        of(Member, stored),
        of(Invitation, stored),
        of(Notification, stored),
        validity,
    )


def _invitation(directory: Directory, invitation_id: str = "id-1") -> Invitation:
    invitation = directory.invitation(invitation_id)
    assert invitation is not None
    return invitation


def test_a2_a_longer_validity_moves_a_pending_invitations_expiry_later() -> None:
    world = World()  # the default, 7 days
    token = world.invite("Ann <ann@x.com>", products=["ACAD"])
    assert _invitation(world.directory).expire_time == T0 + 7 * DAY
    restored = _restored(world, timedelta(days=30))
    invitation = _invitation(restored)
    assert (invitation.send_time, invitation.expire_time) == (T0, T0 + 30 * DAY)
    assert invitation.state_at(T0 + 8 * DAY) is InvitationState.PENDING
    assert [i.expire_time for i in restored.pending_invitations()] == [T0 + 30 * DAY]
    assert restored.expire_invitation("id-1", T0 + 7 * DAY, Changes()) is None  # not due
    restored.accept_invitation(token, T0 + 30 * DAY - SECOND, Changes())  # on day 30
    assert restored.member("acme", "ann@x.com").state is MemberState.ACTIVE


def test_a2_a_shorter_validity_expires_a_pending_invitation_sooner() -> None:
    world = World()
    token = world.invite("Ann <ann@x.com>")
    restored = _restored(world, timedelta(days=3))
    assert _invitation(restored).expire_time == T0 + 3 * DAY
    with pytest.raises(InvitationExpired) as caught:
        restored.accept_invitation(token, T0 + 3 * DAY, Changes())
    assert caught.value.metadata["expire_time"] == "2026-03-04T12:00:00Z"
    changes = Changes()
    expired = restored.expire_invitation("id-1", T0 + 3 * DAY, changes)  # the timer, when due
    assert expired is not None and expired.state is InvitationState.EXPIRED
    assert changes.items == [expired]  # written with the expiry it had


def test_a2_an_invitation_recorded_expired_stays_expired_under_a_longer_validity() -> None:
    world = World()
    token = world.invite("Ann <ann@x.com>")
    assert world.directory.expire_invitation("id-1", T0 + 7 * DAY, Changes()) is not None
    restored = _restored(world, timedelta(days=30))
    invitation = _invitation(restored)
    assert (invitation.state, invitation.expire_time) == (InvitationState.EXPIRED, T0 + 7 * DAY)
    assert restored.pending_invitations() == []
    with pytest.raises(InvitationExpired):
        restored.accept_invitation(token, T0 + 8 * DAY, Changes())


def test_a2_an_accepted_invitation_keeps_what_was_stored() -> None:
    world = World()
    token = world.invite("Ann <ann@x.com>")
    world.directory.accept_invitation(token, T0 + DAY, Changes())
    invitation = _invitation(_restored(world, timedelta(days=30)))
    assert (invitation.state, invitation.expire_time) == (InvitationState.ACCEPTED, T0 + 7 * DAY)


def test_a2_a_resent_invitation_expires_the_validity_in_force_after_its_resending() -> None:
    world = World()
    world.invite("Ann <ann@x.com>")
    world.directory.resend_invitation(
        "acme", "ann@x.com", T0 + 2 * DAY, world.tokens, world.ids, Changes()
    )
    assert _invitation(_restored(world, timedelta(days=30))).expire_time == T0 + 32 * DAY


def test_a2_restoring_leaves_the_loaded_rows_as_they_were() -> None:
    world = World()
    world.invite("Ann <ann@x.com>")
    stored = _stored(world)
    [row] = of(Invitation, stored)
    restored = Directory.restore(
        of(User, stored), of(Member, stored), [row], of(Notification, stored), timedelta(days=30)
    )
    assert row.expire_time == T0 + 7 * DAY
    assert _invitation(restored).expire_time == T0 + 30 * DAY
