"""wordcount.py with a lazy `source`: the octo.py guide's DataSource class.

Instead of reading every book up front, `source` keeps only the list of file
names and reads a file when its text is asked for. The engine needs just
`__iter__` (the keys) and `__getitem__` (one value); `__len__` is optional.
The class is the guide's, unchanged but for the file pattern.
"""
import glob

class DataSource(object):
    def __init__(self):
        self.text_files = glob.glob('books/*.txt')

    def __len__(self):
        return len(self.text_files)

    def __iter__(self):
        return iter(self.text_files)

    def __getitem__(self, key):
        f = open(key)
        try:
            return f.read()
        finally:
            f.close()

source = DataSource()

def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1

def reducefn(key, value):
    return key, len(value)

def final(key, value):
    print(key, value)
