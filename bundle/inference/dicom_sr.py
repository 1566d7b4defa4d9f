"""An image's findings (class probabilities, predicted class, lung attention) as a DICOM Structured Report, and
back.

The template is DICOM PS3.16 TID 1500 "Measurement Report" in a Comprehensive SR: it is the template for
measurements and evaluations an algorithm derives from images, which PACS and viewers (OHIF's SR extension, 3D
Slicer) read, and highdicom writes it (``hd.sr.MeasurementReport``). The report holds one image-level group
(TID 1501, "Measurements and Qualitative Evaluations") that references the source image and carries the model as
its algorithm identification, with

* one numeric measurement per class probability, unit UCUM ``{probability}``;
* the predicted class (each, for a multi-label model) as a qualitative evaluation "Predicted class" (a private
  concept: TID 1501 reserves "Finding", DCM 121071, for the group's finding type);
* lung attention (share of the saliency map inside the lung mask), lung share (share of the image inside it, the
  attention's chance level) and their ratio, unit UCUM ``1``, with the lung (SNOMED CT 39607008) as finding site.

Codes: SNOMED CT where a concept exists (normal 17621005, pneumonia 233604007, bacterial pneumonia 53084003,
viral pneumonia 75570004, COVID-19 840539006, plain chest X-ray 399208008). A class probability, lung attention
and lung share are this bundle's own quantities with no standard concept, so they use the private coding scheme
``99CXRSSL`` (code values equal the predictions.csv columns), declared in the Coding Scheme Identification
Sequence; classes without a SNOMED CT concept get a ``99CXRSSL`` code too. Every number is also stored as a
Floating Point Value, so ``read_findings_sr`` returns exactly the numbers of predictions.csv.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .dicom_seg import LUNG
from .dicom_source import MANUFACTURER, new_instance

__all__ = ["SCHEME", "CLASS_CODES", "write_findings_sr", "read_findings_sr"]

SCHEME = "99CXRSSL"
CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
# TID 1501 reserves "Finding" (DCM 121071) for the group's finding type, and a model's class is not a diagnosis
PREDICTED_CLASS = Code("predicted_class", "99CXRSSL", "Predicted class (model output)")
PROBABILITY = Code("{probability}", "UCUM", "probability")
NO_UNITS = Code("1", "UCUM", "no units")
# the classes SNOMED CT has a concept for; any other class name gets a private code
CLASS_CODES = {
    "normal": Code("17621005", "SCT", "Normal"),
    "pneumonia": Code("233604007", "SCT", "Pneumonia"),
    "bacterial_pneumonia": Code("53084003", "SCT", "Bacterial pneumonia"),
    "viral_pneumonia": Code("75570004", "SCT", "Viral pneumonia"),
    "covid19": Code("840539006", "SCT", "COVID-19"),
}
PROBABILITY_OF = "Probability of "
LUNG_MEASURES = {
    "lung_attention": "Lung attention (saliency share inside the lungs)",
    "lung_share": "Lung share (image share inside the lungs)",
    "lung_attention_ratio": "Lung attention ratio (attention / share)",
}


def _private(value: str, meaning: str) -> Code:
    """A ``99CXRSSL`` code; a value over 16 characters (a Short String) becomes its start and a hash, the same for
    the same value."""
    if len(value) > 16:
        value = f"{value[:7]}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"
    return Code(value, SCHEME, meaning[:64])


def _class_code(name: str) -> Code:
    return CLASS_CODES.get(name) or _private(name, name)


def _measurements(row: dict, class_names: Sequence[str], algorithm: hd.sr.AlgorithmIdentification) -> list:
    """One measurement per class probability and per lung quantity the row has (an undefined one is left out)."""
    named = [(f"prob_{c}", f"{PROBABILITY_OF}{c}", PROBABILITY, None) for c in class_names]
    named += [(key, meaning, NO_UNITS, [hd.sr.FindingSite(LUNG)]) for key, meaning in LUNG_MEASURES.items()]
    out = []
    for key, meaning, unit, sites in named:
        value = row.get(key)
        if value is None or value == "" or math.isnan(float(value)):
            continue
        out.append(
            hd.sr.Measurement(
                name=_private(key, meaning), value=float(value), unit=unit, algorithm_id=algorithm, finding_sites=sites
            )
        )
    return out


def _coding_scheme() -> CodingSchemeIdentificationItem:
    return CodingSchemeIdentificationItem(
        designator=SCHEME,
        name="chest_xray_ssl_multitask findings",
        responsible_organization="chest_xray_ssl_multitask (private codes for its own quantities)",
    )


def _observer(algorithm: tuple[str, str]) -> hd.sr.ObservationContext:
    """The model as the observing device."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name=algorithm[0], manufacturer_name=MANUFACTURER, model_name=f"{algorithm[0]} {algorithm[1]}"
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def write_findings_sr(
    source: Dataset,
    row: dict[str, Any],
    class_names: Sequence[str],
    *,
    algorithm: tuple[str, str],
    series_number: int = 902,
) -> Dataset:
    """A TID 1500 Comprehensive SR of one predictions row about ``source``.

    Args:
        source: the radiograph (its patient and study; referenced by the measurement group and as evidence).
        row: a predictions.csv row: ``predicted`` (``;``-joined for multi-label), ``prob_<class>``,
            ``lung_attention``, ``lung_share``, ``lung_attention_ratio`` (None / NaN: left out).
        class_names: the model's classes, in its order.
        algorithm: (name, version) of the model.
    """
    algo = hd.sr.AlgorithmIdentification(name=algorithm[0], version=algorithm[1])
    predicted = [c for c in str(row.get("predicted") or "").split(";") if c]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="chest X-ray findings"),
        algorithm_id=algo,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=_measurements(row, class_names, algo),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(PREDICTED_CLASS, _class_code(c)) for c in predicted]
        or None,
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observer(algorithm), procedure_reported=CHEST_XRAY, imaging_measurements=[group]
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        is_complete=True,
        is_verified=False,  # a model's output, not verified by a person
        **new_instance(series_number, "Chest X-ray findings"),
        coding_schemes=[_coding_scheme()],
    )


def read_findings_sr(sr: Dataset) -> dict[str, Any]:
    """The numbers of a SR written by ``write_findings_sr``: ``{"predicted", "prob_<class>"..., "lung_attention",
    "lung_share", "lung_attention_ratio", "source_sop_instance_uid"}`` (a quantity left out is absent).

    Raises:
        ValueError: ``sr`` is not a TID 1500 report with one image measurement group.
    """
    # a copy through its bytes: pydicom 2 cannot deep-copy a document highdicom has just built in memory
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, sr)
    buffer.seek(0)
    document = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(buffer), copy=False)
    content = document.content
    groups = content.get_image_measurement_groups() if hasattr(content, "get_image_measurement_groups") else []
    if len(groups) != 1:
        raise ValueError(f"expected a TID 1500 report with one image measurement group, got {len(groups)}")
    group = groups[0]
    keys = {meaning: key for key, meaning in LUNG_MEASURES.items()}
    out: dict[str, Any] = {}
    for m in group.get_measurements():
        meaning = str(m.name.meaning)
        key = f"prob_{meaning[len(PROBABILITY_OF):]}" if meaning.startswith(PROBABILITY_OF) else keys.get(meaning)
        if key:
            out[key] = float(m.value)
    names = {(code.scheme_designator, code.value): name for name, code in CLASS_CODES.items()}
    found = [
        names.get((q.value.scheme_designator, q.value.value), str(q.value.meaning))
        for q in group.get_qualitative_evaluations(PREDICTED_CLASS)
    ]
    out["predicted"] = ";".join(found)
    out["source_sop_instance_uid"] = str(group.source_images[0].referenced_sop_instance_uid)
    return out
