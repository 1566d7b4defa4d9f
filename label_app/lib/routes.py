"""The app's versions of MONAI Label's routes, put on the server's FastAPI app (``monailabel.app.app``) at start.

MONAI Label 0.8.5 offers no hook before it stores an upload, starts a training or answers a strategy, its
``/infer`` is an ``async def`` that runs the network on the event loop (every other request waits), and its answers
carry server paths. The app's routes keep MONAI Label's paths, parameters and answers, and add: the checks of
``checks`` before any work (a 4xx with a ``detail`` instead of a 200 that fails later or a bare 500), inference
in FastAPI's thread pool (plain ``def`` routes), and answers without server paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from typing import Annotated, Any, Callable, Optional

from fastapi import BackgroundTasks, Depends, FastAPI, File, Form, HTTPException, UploadFile
from monailabel.config import settings
from monailabel.endpoints import activelearning, datastore, infer, scoring, train
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.utils.app import app_instance

from .checks import (
    RefusedError,
    check_id,
    check_label_file,
    check_study_file,
    check_suffix,
    parse_params,
    without_paths,
)

__all__ = ["install_routes", "refusals_as_http", "upload_folder", "STUDY_SUFFIXES"]

logger = logging.getLogger(__name__)

STUDY_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")  # what the datastore lists and the bundle reads
USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
ANNOTATOR = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))
# MONAI Label's form fields, as its own routes declare them
Params = Annotated[str, Form()]
Upload = Annotated[UploadFile, File()]
OptionalUpload = Annotated[Optional[UploadFile], File()]


def refusals_as_http(call: Callable[[], Any]) -> Any:
    """``call()``, with a ``RefusedError`` as its HTTP error and a ``MONAILabelException`` as a 422 (both without
    server paths)."""
    try:
        return call()
    except RefusedError as e:
        raise HTTPException(status_code=e.status, detail=e.detail) from None
    except MONAILabelException as e:
        raise HTTPException(status_code=422, detail=without_paths(e.msg)) from None


UPLOADS_PREFIX = "cxr-infer-"


def upload_folder() -> str:
    """A new folder for the studies sent with ``/infer``, named ``cxr-infer-<pid>-...``.

    uvicorn ends the server by raising SIGTERM again after its shutdown, so no exit hook of this process runs; each
    start instead removes the upload folders of servers that are no longer running."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        pid = name[len(UPLOADS_PREFIX) :].split("-")[0]
        if name.startswith(UPLOADS_PREFIX) and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{UPLOADS_PREFIX}{os.getpid()}-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process, or an id no process can have
        return False
    except PermissionError:  # another user's
        return True
    return True


def _save_upload(upload: UploadFile, folder: str, stem: str, suffix: str) -> str:
    path = os.path.join(folder, stem + suffix)
    with open(path, "wb") as f:
        shutil.copyfileobj(upload.file, f)
    return path


def run_infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: Params = "{}",
    file: OptionalUpload = None,
    label: OptionalUpload = None,
    output: Optional[infer.ResultType] = None,
    user: User = USER,
):
    """``POST /infer/{model}``: a datastore study (``image``) or an uploaded one (``file``) through a model."""

    def run() -> Any:
        p = parse_params(params)
        if session_id or label is not None:
            raise RefusedError(422, "sessions and input labels are not served: send image or file")
        answer = output
        if output == infer.ResultType.dicom_seg:
            # MONAI Label's own dicom_seg output converts a NIfTI result through ITK and pydicom-seg; the app's
            # SEG is the bundle's (on the DICOM study's grid, stored in its study), answered as the result file
            if model != "lung_segmentation":
                raise RefusedError(422, f"output=dicom_seg is the lung mask: model 'lung_segmentation', not {model!r}")
            p["dicom_seg"], answer = True, infer.ResultType.image
        instance = app_instance()
        request = {"model": model, "image": image, **p}
        if file is not None:
            suffix = check_suffix(file.filename, STUDY_SUFFIXES, "file")
            request["image"] = _save_upload(file, instance.upload_dir, uuid.uuid4().hex, suffix)
            background_tasks.add_task(os.remove, request["image"])
        result = instance.infer(request)
        return infer.send_response(instance.datastore(), result, answer, background_tasks)

    return refusals_as_http(run)


def put_image(
    background_tasks: BackgroundTasks,
    file: Upload,
    image: Optional[str] = None,
    params: Params = "{}",
    user: User = ANNOTATOR,
):
    """``PUT /datastore/``: a study stored only when the bundle can read it."""

    def run() -> dict[str, Any]:
        p = parse_params(params)
        suffix = check_suffix(file.filename, STUDY_SUFFIXES, "upload")
        image_id = check_id(image or os.path.basename(file.filename)[: -len(suffix)], "image")
        with tempfile.TemporaryDirectory() as tmp:
            path = _save_upload(file, tmp, image_id, suffix)
            check_study_file(path, image_id)
            return {"image": app_instance().datastore().add_image(image_id, path, p)}

    return refusals_as_http(run)


def put_label(
    background_tasks: BackgroundTasks,
    image: str,
    label: Upload,
    params: Params = "{}",
    tag: str = DefaultLabelTag.FINAL.value,
    user: User = ANNOTATOR,
):
    """``PUT /datastore/label``: a lung mask stored only when the bundle can train from it with its study."""

    def run() -> dict[str, Any]:
        p = parse_params(params)
        instance = app_instance()
        study = instance.study_uri(image)
        check_id(tag or DefaultLabelTag.FINAL.value, "tag")
        suffix = check_suffix(label.filename, STUDY_SUFFIXES, "label")
        with tempfile.TemporaryDirectory() as tmp:
            path = _save_upload(label, tmp, image, suffix)
            check_label_file(study, path, image)
            label_id = instance.datastore().save_label(image, path, tag or DefaultLabelTag.FINAL.value, p)
        res = instance.on_save_label(image, label_id) or {}
        res.update(image=image, label=label_id)
        return res

    return refusals_as_http(run)


def run_train(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = ADMIN,
):
    """``POST /train/{model}``: started only for a known model with options its train task accepts."""

    def run() -> Any:
        app_instance().check_train_request(model, params)
        return train.run_model(model, params, run_sync, enqueue)

    return refusals_as_http(run)


def next_sample(strategy: str, params: Optional[dict] = None, user: User = USER) -> dict[str, Any]:
    """``POST /activelearning/{strategy}``: the next study to annotate (its id and info, not its path)."""

    def run() -> dict[str, Any]:
        app_instance().check_strategy(strategy)
        result = activelearning.sample(strategy, params, user.username)
        return {k: v for k, v in result.items() if k != "path"}

    return refusals_as_http(run)


def _named(value: Any) -> Any:
    """``value`` (JSON) with every absolute path in its strings replaced by the file name."""
    if isinstance(value, str):
        return without_paths(value)
    if isinstance(value, dict):
        return {k: _named(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_named(v) for v in value]
    return value


def train_status(all: bool = False, check_if_running: bool = False, user: User = USER) -> Any:
    """``GET /train/``: MONAI Label's status, its log lines naming files, not server folders."""
    return _named(train.status(all, check_if_running))


def scoring_status(all: bool = False, check_if_running: bool = False, user: User = USER) -> Any:
    """``GET /scoring/``: MONAI Label's status, its log lines naming files, not server folders."""
    return _named(scoring.status(all, check_if_running))


def image_info(image: str, user: User = USER) -> dict[str, Any]:
    """``GET /datastore/image/info``: a study's info, without its path."""
    return {k: v for k, v in datastore.get_image_info(image).items() if k != "path"}


def listing(output: Optional[datastore.ResultType] = None, user: User = USER) -> Any:
    """``GET /datastore/``: MONAI Label's listing; ``output=train`` names each study's and label's file, not its path."""
    if output != datastore.ResultType.train:
        return datastore.datastore(output)
    return [{k: os.path.basename(v) for k, v in d.items()} for d in app_instance().datastore().datalist()]


ROUTES = {
    ("/infer/{model}", "POST"): run_infer,
    ("/datastore/", "PUT"): put_image,
    ("/datastore/image", "PUT"): put_image,
    ("/datastore/label", "PUT"): put_label,
    ("/train/{model}", "POST"): run_train,
    ("/activelearning/{strategy}", "POST"): next_sample,
    ("/train/", "GET"): train_status,
    ("/scoring/", "GET"): scoring_status,
    ("/datastore/image/info", "GET"): image_info,
    ("/datastore/", "GET"): listing,
}


def install_routes(api: FastAPI) -> None:
    """Put the app's routes in ``ROUTES`` on ``api`` before MONAI Label's (same paths, methods and parameters): the
    first route that matches answers, and FastAPI keeps included routers by reference, so theirs stay, unused."""
    prefix = settings.MONAI_LABEL_API_STR
    for (path, method), endpoint in ROUTES.items():
        api.add_api_route(prefix + path, endpoint, methods=[method], summary=endpoint.__doc__.split(":")[0])
        api.router.routes.insert(0, api.router.routes.pop())
        logger.info("route %s %s: the app's (checked, in the thread pool)", method, prefix + path)
