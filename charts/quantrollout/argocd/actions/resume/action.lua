-- Argo CD action "resume": what `kubectl quantrollout resume` does, spec.rollout.paused: false.
-- With automated sync and self-heal, Argo CD puts back what Git says: change it in Git there.
if obj.spec.rollout == nil then
  obj.spec.rollout = {}
end
obj.spec.rollout.paused = false
return obj
