"""What to render: the image size, the window onto the complex plane, the depth.

Split.py, Process.py and Merge.py all import these numbers from here, so the
three parts of the job cannot disagree about them. A package may hold any
helper modules like this one next to the three required files.
"""

WIDTH = 600
HEIGHT = 400
ROWS_PER_FRAGMENT = 10  # 400 rows -> 40 fragments of 6_000 pixels each

# The window: real part from X_MIN, imaginary part from Y_MIN, both in steps of
# PIXEL_SIZE, so pixels are square. 600 x 0.005 = 3.0 wide, 400 x 0.005 = 2.0 tall.
X_MIN = -2.2
Y_MIN = -1.0
PIXEL_SIZE = 0.005

# At most 255, because each pixel's escape time travels as one byte.
# A pixel whose value is MAX_ITER never escaped: it is in the set.
MAX_ITER = 200
