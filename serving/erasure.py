"""``DELETE /v1/profiles/{profile_id}``: erase a member (admin keys only, see serving.auth).

The member's keys are gone when the response is sent; the worker forgets their model
parameters within seconds of the tombstone (``homestream.erase``), hence 202.
"""

from __future__ import annotations

from aiohttp import web

from homestream.erase import erase_profiles
from homestream.player.producer import ProducerError
from serving.home import HOME
from serving.http import SETTINGS, STORE, error_response, json_response
from serving.validation import check_profile_id


async def delete_profile(request: web.Request) -> web.Response:
    """Erase the member named in the path."""
    profile_id = check_profile_id(request.match_info["profile_id"])
    app = request.app
    try:
        deleted = await erase_profiles(app[SETTINGS], app[STORE], [profile_id])
    except ProducerError as exc:
        return error_response(503, f"erased from Redis, but the tombstone was not delivered "
                                   f"(retry the request): {exc}")
    app[HOME].forget(profile_id)  # this process' compiled page of theirs (others: on read)
    return json_response({"profile_id": profile_id, "erased": True, "keys_deleted": deleted,
                          "tombstone": True}, status=202)


def add_erasure(app: web.Application) -> None:
    """Register the erasure route."""
    app.router.add_delete("/v1/profiles/{profile_id}", delete_profile)
