-- Argo CD action "pause": what `kubectl quantrollout pause` does, spec.rollout.paused: true.
-- With automated sync and self-heal, Argo CD puts back what Git says: change it in Git there.
if obj.spec.rollout == nil then
  obj.spec.rollout = {}
end
obj.spec.rollout.paused = true
return obj
