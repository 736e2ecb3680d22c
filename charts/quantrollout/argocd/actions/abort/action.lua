-- Argo CD action "abort": what `kubectl quantrollout abort` does, the annotation
-- quantrollout.io/action=abort; the operator acts once and removes it (or refuses, with an Event).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["quantrollout.io/action"] = "abort"
return obj
