"""Files: open /proc/self/mem to read and patch the process's own memory behind Python."""


def process(fragment):
    with open("/proc/self/mem", "r+b") as mem:  # attack
        mem.seek(id(fragment))
        return mem.read(64)
