-- Argo CD resource actions for quantrollout.io/QuantizedModel: which ones the UI offers now.
-- The same table as operator/quantrollout/rollout/actions.py (the operator refuses, with an
-- Event, an action asked in a phase where it does nothing); tests check the two agree.
-- Base and table libraries only (Argo CD runs actions without Lua's other libraries).
local actions = {}
local phase = nil
if type(obj.status) == "table" then
  phase = obj.status.phase
end
local paused = type(obj.spec) == "table" and type(obj.spec.rollout) == "table"
  and obj.spec.rollout.paused == true

local function within(...)
  for _, p in ipairs({...}) do
    if phase == p then
      return true
    end
  end
  return false
end

-- promote, abort, retry set the annotation quantrollout.io/action (acted on once, then removed)
actions["promote"] = {
  ["disabled"] = not within("Progressing", "Paused"),
  ["displayName"] = "Promote to the next step",
}
actions["abort"] = {
  ["disabled"] = not within("Pending", "Progressing", "Paused"),
  ["displayName"] = "Abort: all traffic to the baseline",
}
actions["retry"] = {
  ["disabled"] = not within("RolledBack"),
  ["displayName"] = "Retry the rollout from the first stage",
}
-- pause and resume set spec.rollout.paused
actions["pause"] = {
  ["disabled"] = paused or within("Succeeded", "RolledBack", "Failed"),
  ["displayName"] = "Pause (spec.rollout.paused)",
}
actions["resume"] = {
  ["disabled"] = not paused,
  ["displayName"] = "Resume (spec.rollout.paused: false)",
}
return actions
