import dataclasses
from typing import TypedDict

import msgspec
import pydantic
import pytest

import workhorse as wh


@dataclasses.dataclass
class OrderDC:
    sku: str
    qty: int


class OrderTD(TypedDict):
    sku: str
    qty: int


class OrderStruct(msgspec.Struct):
    sku: str
    qty: int


class OrderModel(pydantic.BaseModel):
    sku: str
    qty: int


async def run_once(app, job):
    async with wh.LocalWorker(app) as worker:
        return await worker.perform(job, sync=True)


@pytest.mark.parametrize("order_type", [OrderDC, OrderStruct, OrderModel])
async def test_args_are_converted_to_the_annotated_type(order_type):
    app = wh.App("memory://")
    received = []

    async def handle(job: wh.Job[order_type]) -> int:
        received.append(job.args)
        return job.args.qty * 2

    app.register("order", handle)
    done = await run_once(app, wh.Job("order", args={"sku": "A1", "qty": 3}))
    assert done.status is wh.Status.SUCCESS and done.result == 6
    assert isinstance(received[0], order_type) and received[0].sku == "A1"


async def test_typeddict_args_are_validated():
    app = wh.App("memory://")
    app.register("order", lambda job: job.args["qty"], args_type=OrderTD)
    assert (await run_once(app, wh.Job("order", args={"sku": "A", "qty": 2}))).result == 2
    bad = await run_once(app, wh.Job("order", args={"sku": "A"}))
    assert bad.status is wh.Status.BAD_REQUEST and "qty" in bad.error


@pytest.mark.parametrize("order_type", [OrderDC, OrderStruct, OrderModel, OrderTD])
async def test_invalid_args_end_with_400_naming_the_field(order_type):
    app = wh.App("memory://")
    ran = []
    app.register("order", ran.append, args_type=order_type)
    done = await run_once(app, wh.Job("order", args={"sku": "A1", "qty": "three"}))
    assert done.status is wh.Status.BAD_REQUEST
    assert "qty" in done.error
    assert ran == []


async def test_explicit_args_type_wins_and_untyped_handlers_get_raw_args():
    app = wh.App("memory://")
    app.register("raw", lambda job: job.args)
    done = await run_once(app, wh.Job("raw", args={"any": ["thing"]}))
    assert done.result == {"any": ["thing"]}
    assert app.registry.get("raw").args_type is None


def test_declared_type_is_found_at_registration():
    app = wh.App("memory://")

    async def handle(job: wh.Job[OrderDC]) -> None:
        return None

    assert app.register("order", handle).args_type is OrderDC
