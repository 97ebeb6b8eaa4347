"""Figures and tables: what ``routelab export`` and the analyses write, in Python."""

import math

import routelab


def _typed_columns(header, rows):
    """Each column as ints, floats or booleans when every field parses as one, else strings."""

    def as_int(s):
        return int(s)

    def as_float(s):
        return float(s) if s != "" else math.nan

    def as_bool(s):
        if s == "true":
            return True
        if s == "false":
            return False
        raise ValueError(s)

    columns = []
    for j in range(len(header)):
        fields = [r[j] for r in rows]
        for parse in (as_int, as_float, as_bool):
            try:
                columns.append([parse(f) for f in fields])
                break
            except ValueError:
                continue
        else:
            columns.append(fields)
    return columns


class Table:
    """A result table: ``records`` (a list of dicts, numbers parsed), ``to_pandas()``,
    ``csv()``, ``save(path)`` (CSV)."""

    def __init__(self, inner):
        self._inner = inner

    @property
    def header(self):
        return list(self._inner.header)

    @property
    def records(self):
        header = self._inner.header
        columns = _typed_columns(header, self._inner.rows)
        n = len(columns[0]) if columns else 0
        return [{h: columns[j][i] for j, h in enumerate(header)} for i in range(n)]

    def to_pandas(self):
        """The table as a pandas DataFrame (pandas must be installed)."""
        import pandas

        header = self._inner.header
        columns = _typed_columns(header, self._inner.rows)
        return pandas.DataFrame({h: columns[j] for j, h in enumerate(header)}, columns=header)

    def csv(self):
        return self._inner.csv()

    def save(self, path):
        """Writes the table as CSV."""
        self._inner.save(str(path))

    def __len__(self):
        return len(self._inner.rows)

    def __repr__(self):
        return f"<routelab.Table {len(self)} rows: {', '.join(self.header)}>"

    def _repr_html_(self):
        try:
            return self.to_pandas()._repr_html_()
        except ImportError:
            return None


class Figure(Table):
    """A view: its table (``records``, ``to_pandas()``) and its plot (``png()``, ``svg()``,
    shown inline in Jupyter). ``save(path)`` writes PNG, SVG or CSV by the extension, as
    ``routelab export`` does."""

    @property
    def title(self):
        return self._inner.title

    def png(self):
        """The plot as PNG bytes."""
        return self._inner.png()

    def svg(self):
        """The plot as an SVG document."""
        return self._inner.svg()

    def save(self, path):
        """Writes the plot (.png, .svg) or the table (.csv), by the extension."""
        self._inner.save(str(path))

    def _repr_png_(self):
        return self.png() if routelab.inline_format == "png" else None

    def _repr_svg_(self):
        return self.svg() if routelab.inline_format == "svg" else None

    def _repr_html_(self):
        # The image, not the table, is what a figure shows.
        return None

    def __repr__(self):
        return f"<routelab.Figure {self.title!r}: {len(self)} rows>"
