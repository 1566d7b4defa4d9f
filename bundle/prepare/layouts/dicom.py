NAME="dicom"
