"""Function coverage of the overlay module through the function tracer (ftrace): which of
its functions a case reached. Debian's kernels have no gcov or kcov, but they have
CONFIG_FUNCTION_TRACER and CONFIG_DYNAMIC_FTRACE: limited to one module
(`set_ftrace_filter` ':mod:overlay'), the tracer records every call of that module's
traceable functions into a per-CPU ring buffer, which the agent reads and empties once
per case (`trace_functions`).

The report properties that carry the findings are declared here, where the plugin that
writes them and the results layer that reads them can both import them."""

from dataclasses import dataclass

TRACEFS = "/sys/kernel/tracing"
BUFFER_KB = 16384  # per CPU: no case of the suite comes near filling it (the count of lost events says)

# Report properties: the functions a case reached (space-separated), the events its trace
# lost (only when some were), and, on the case that waited for a boot, the module's
# functions as that kernel has them (space-separated names, "traceable|untraceable").
PROP_FUNCTIONS = "ovl_functions"
PROP_FUNCTIONS_LOST = "ovl_functions_lost"
PROP_MODULE_FUNCTIONS = "ovl_module_functions"


@dataclass
class ModuleFunctions:
    """The functions of a loaded module: those the tracer can record, and the rest of its
    text symbols (notrace, or code the tracer cannot hook)."""

    module: str
    traceable: list
    untraceable: list

    def as_property(self):
        return f"{' '.join(self.traceable)}|{' '.join(self.untraceable)}"

    @classmethod
    def from_property(cls, module, text):
        traceable, _, untraceable = text.partition("|")
        return cls(module, traceable.split(), untraceable.split())


def text_symbols(kallsyms_lines, module):
    """Function names of `module` in /proc/kallsyms lines ("addr t name\t[module]"),
    without the compiler's padding and CFI stubs (__pfx_*, __cfi_*) and the cold parts
    it splits off functions (name.cold: the rest of a function, not one of its own)."""
    names = set()
    for line in kallsyms_lines:
        parts = line.split()
        if (len(parts) >= 4 and parts[3] == f"[{module}]" and parts[1] in ("t", "T")
                and not parts[2].startswith(("__pfx_", "__cfi_")) and ".cold" not in parts[2]):
            names.add(parts[2])
    return sorted(names)


def start(g, module="overlay"):
    """Trace every traceable function of `module` from now on (loading it first, as the
    filter needs it loaded); the module's functions. `g` is a Guest outside any case's
    call log (the harness's own set-up)."""
    if not isinstance(g.stat(f"{TRACEFS}/trace"), dict):
        g.must.mount("tracefs", TRACEFS, "tracefs", 0, None)
    g.run(["modprobe", module], check=False)
    g.must.write_file(f"{TRACEFS}/current_tracer", b"nop")
    g.must.write_file(f"{TRACEFS}/buffer_size_kb", str(BUFFER_KB).encode())
    g.must.write_file(f"{TRACEFS}/set_ftrace_filter", f":mod:{module}".encode())
    # one line per function: "ovl_lookup [overlay]"
    selected = [line.split()[0] for line in
                g.must.read_file(f"{TRACEFS}/set_ftrace_filter").decode().splitlines() if line.strip()]
    if not selected or selected[0].startswith("#"):  # "#### all functions enabled ####"
        raise RuntimeError(f"the function tracer selected nothing of module {module} "
                           f"(is it loaded? set_ftrace_filter: {' '.join(selected[:6])})")
    g.must.write_file(f"{TRACEFS}/current_tracer", b"function")
    g.must.write_file(f"{TRACEFS}/tracing_on", b"1")
    g.must.trace_functions()  # what the set-up itself recorded is no case's
    found = g.run(["grep", "-F", f"[{module}]", "/proc/kallsyms"], check=False)
    symbols = text_symbols(found.stdout.splitlines(), module)
    traceable = sorted(set(selected))
    return ModuleFunctions(module, traceable, sorted(set(symbols) - set(traceable)))
