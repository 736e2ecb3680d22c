"""Analysis: rules turned into PromQL (`rules`), measured by a metric provider (`prometheus`),
and judged by a pure function (`judge`) into Pass, Fail or Inconclusive. Missing data is never
a Pass."""
