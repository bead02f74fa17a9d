"""covidcxr as a DICOM application: a C-STORE SCP (:mod:`~covidcxr.dicomnode.scp`) and a
DICOMweb client (:mod:`~covidcxr.dicomnode.web`) that analyse frontal chest radiographs
(:mod:`~covidcxr.dicomnode.filters`) and store a Structured Report and a Grad-CAM Secondary
Capture in the film's study (:mod:`~covidcxr.dicomnode.results`). Research use only.

A front door beside :mod:`covidcxr.service`, built on :mod:`covidcxr.inference` and
:mod:`covidcxr.analysis.explain`; it never imports the training engine.
"""
