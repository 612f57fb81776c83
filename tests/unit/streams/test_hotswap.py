"""Unit tests of :class:`streams.hotswap.ModelHolder`: when the first click may go."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from serving.bundle import ModelBundle
from streams.hotswap import ModelHolder


class _Bundle:
    version = "v1"


def test_a_loaded_bundle_waits_for_the_start_up_experiment() -> None:
    """The last announcement loads first and the experiment's arms after it; a click taken
    between the two would be written with arm ``all``."""

    async def scenario() -> list[str]:
        holder, seen = ModelHolder(), []

        async def clicks() -> None:
            bundle: Any = await holder.wait_ready()
            seen.append(bundle.version)

        task = asyncio.create_task(clicks())
        holder.swap(cast(ModelBundle, _Bundle()))
        await asyncio.sleep(0.01)
        assert seen == [] and holder.loaded  # loaded, but the experiment is not set yet
        holder.started()
        await asyncio.wait_for(task, 1)
        return seen

    assert asyncio.run(scenario()) == ["v1"]


def test_started_without_a_bundle_waits_for_the_first_swap() -> None:
    async def scenario() -> bool:
        holder = ModelHolder()
        holder.started()
        task = asyncio.create_task(holder.wait_ready())
        await asyncio.sleep(0.01)
        waiting = not task.done()
        holder.swap(cast(ModelBundle, _Bundle()))
        await asyncio.wait_for(task, 1)
        return waiting

    assert asyncio.run(scenario())
