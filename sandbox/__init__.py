"""sandbox: runs job code in a confined child (user and network namespaces, Landlock,
rlimits, no_new_privs, seccomp) and names the rule a job broke.

A leaf package: it imports neither `octop2p` nor `gui`.
"""

from ._confine import LayerStatus as LayerStatus
from ._confine import clean_environ as clean_environ
from ._confine import confine as confine
from ._confine import probe as probe
from ._landlock import kernel_gaps as kernel_gaps
from ._policy import ALL_LAYERS as ALL_LAYERS
from ._policy import Policy as Policy
from ._policy import SandboxError as SandboxError
from ._rules import describe_exception as describe_exception
from ._rules import describe_exit as describe_exit
