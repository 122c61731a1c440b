"""Independent check of a PDF's QR codes: renders each page with PyMuPDF and decodes the
pixels with zxing-cpp (neither shares code with the Rust side). Prints one decoded text per
line.

Usage: qr_decode.py FILE.pdf
"""
import sys

import numpy
import pymupdf
import zxingcpp


def main(path):
    doc = pymupdf.open(path)
    for page in doc:
        pix = page.get_pixmap(dpi=300, colorspace=pymupdf.csGRAY, alpha=False)
        img = numpy.frombuffer(pix.samples, dtype=numpy.uint8).reshape(pix.height, pix.width)
        for r in zxingcpp.read_barcodes(img):
            print(r.text)


if __name__ == "__main__":
    main(sys.argv[1])
