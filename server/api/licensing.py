"""LicensingService: products and plugins ask here (RULES §4-§6).

Thin: the caller is the user the edge resolved from the key
(``current_user``); the engine decides; ``convert`` shapes the answer.
"""

from __future__ import annotations

from typing import Any

from server.api import convert as cv
from server.api.interceptors import current_user
from server.domain.sessions import SessionView
from server.engine import Engine
from server.leases import LeaseSigner
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as api
from tessera_api.tessera.v1 import licensing_service_pb2_grpc

Ctx = Any


class LicensingServicer(licensing_service_pb2_grpc.LicensingServiceServicer):
    def __init__(self, engine: Engine, signer: LeaseSigner) -> None:
        self.e = engine
        self.s = engine.sessions
        self.signer = signer

    async def Entitle(self, request: api.EntitleRequest, context: Ctx) -> Any:
        platform = (
            None
            if request.platform == pb.PLATFORM_UNSPECIFIED
            else cv.platform_in(request.platform)
        )
        view = await self.s.entitle(
            current_user.get(),
            product_id=request.product_id,
            product_version=request.product_version,
            platform=platform,
            device_id=request.device_id,
            parent_session_id=request.parent_session_id,
            request_id=request.request_id,
            takeover=request.takeover,
            team_id=request.team_id,
        )
        return await self._answer(api.EntitleResponse(), view, request.request_id)

    async def Heartbeat(self, request: api.HeartbeatRequest, context: Ctx) -> Any:
        view = await self.s.heartbeat(
            current_user.get(), request.session_id, request.seconds_since_activity
        )
        return await self._answer(api.HeartbeatResponse(), view)

    async def _answer(self, out: Any, view: SessionView, request_id: str = "") -> Any:
        """An Entitle or Heartbeat answer: the session and its freshly signed lease
        (under load, signed with others in a batch: ``server/leases.py``), written
        into the response's own fields (issue 17: building each message and copying
        it into its parent cost a third of building the answer)."""
        cv.session_into(out.session, view)
        await self.signer.sign_into(out.lease, view, self.e.now(), request_id)
        return out

    async def Idle(self, request: api.IdleRequest, context: Ctx) -> Any:
        view = await self.s.idle(current_user.get(), request.session_id)
        return api.IdleResponse(session=cv.session_out(view))

    async def Release(self, request: api.ReleaseRequest, context: Ctx) -> Any:
        view = await self.s.release(current_user.get(), request.session_id)
        return api.ReleaseResponse(session=cv.session_out(view))

    async def GetSigningKeys(self, request: api.GetSigningKeysRequest, context: Ctx) -> Any:
        return api.GetSigningKeysResponse(keys=self.signer.published(self.e.now()))

    async def ListMyProducts(self, request: api.ListMyProductsRequest, context: Ctx) -> Any:
        """RULES AD5: what the caller may run now, through which teams, what would pay."""
        return api.ListMyProductsResponse(
            products=[
                api.MyProduct(
                    product_id=p.product.product_id,
                    display_name=p.product.display_name,
                    kind=cv.KINDS_OUT[p.product.kind],
                    host_product_id=p.product.host_product_id,
                    daily_rate=p.product.daily_rate,
                    team_ids=p.team_ids,
                    coverage=cv.COVERAGES_OUT[p.coverage],
                )
                for p in self.e.access.my_products(current_user.get())
            ]
        )
