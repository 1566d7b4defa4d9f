NAME="siim"
