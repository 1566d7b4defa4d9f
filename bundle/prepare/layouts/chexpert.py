NAME="chexpert"
