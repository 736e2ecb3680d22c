-- Argo CD action "promote": what `kubectl quantrollout promote` does, the annotation
-- quantrollout.io/action=promote; the operator acts once and removes it (or refuses, with an Event).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["quantrollout.io/action"] = "promote"
return obj
