"""One level-based pass per model: observe (`observe`), decide (`plan`, pure), apply
(`execute`), with a 409 on the status write redoing the decision on fresh state (`run`)."""
