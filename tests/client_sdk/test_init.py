from __future__ import annotations

import switchyard.client as sdk
from switchyard.client import aio, errors, results, retry, sync, tensors


def test_every_exported_name_exists() -> None:
    assert sorted(sdk.__all__) == sorted(set(sdk.__all__))
    for name in sdk.__all__:
        assert hasattr(sdk, name), name


def test_clients_results_and_helpers_are_the_modules_own() -> None:
    assert sdk.Client is sync.Client
    assert sdk.AsyncClient is aio.AsyncClient
    assert sdk.InferResult is results.InferResult
    assert sdk.ProgressiveResult is results.ProgressiveResult
    assert sdk.RouteInfo is results.RouteInfo
    assert sdk.RouteStep is results.RouteStep
    assert sdk.RetryPolicy is retry.RetryPolicy
    assert sdk.from_numpy is tensors.from_numpy
    assert sdk.to_numpy is tensors.to_numpy


def test_every_error_class_is_exported() -> None:
    assert sdk.SwitchyardError is errors.SwitchyardError
    for cls in errors.ERROR_CLASSES.values():
        assert getattr(sdk, cls.__name__) is cls
        assert cls.__name__ in sdk.__all__
