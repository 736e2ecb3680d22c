-- Argo CD action "retry": what `kubectl quantrollout retry` does, the annotation
-- quantrollout.io/action=retry; the operator acts once and removes it (or refuses, with an Event).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["quantrollout.io/action"] = "retry"
return obj
