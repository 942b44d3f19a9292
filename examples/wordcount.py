"""Count how often each word occurs in books/*.txt: the octo.py user's guide example.

This is the guide's first octo.py script, unchanged except that print is a
function in Python 3. `source` maps each file name to that file's text;
`mapfn` runs on workers and yields (word, 1) for every word; `reducefn` gets
one word with the list of all its 1s; `final` runs on the chief and prints
each pair that `reducefn` returned, in sorted order of the words.

The script runs with its own folder as working directory, so the relative
pattern 'books/*.txt' finds examples/books/.
"""
import glob

text_files = glob.glob('books/*.txt')

def file_contents(file_name):
    f = open(file_name)
    try:
        return f.read()
    finally:
        f.close()

source = dict((file_name, file_contents(file_name))
              for file_name in text_files)

def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1

def reducefn(key, value):
    return key, len(value)

def final(key, value):
    print(key, value)
