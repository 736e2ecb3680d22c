-- Argo CD health check for quantrollout.io/QuantizedModel.
-- Argo CD runs it with the object as `obj` and reads hs.status and hs.message.
-- Plain Lua 5.1 (Argo CD embeds gopher-lua). Tested by tests/unit/test_argocd_health.py;
-- argocd-cm-snippet.yaml embeds this file verbatim (the test fails if they differ).
local hs = {}

-- Numbers as Argo CD prints them: 10 -> "10", 0.21 -> "0.21" (whatever the Lua version).
local function num(value)
  if value == nil then
    return "0"
  end
  return string.format("%g", value)
end

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

-- "last analysis: Pass", or the verdict with every rule that did not pass and why.
local function analysis(last)
  if last == nil or last.verdict == nil then
    return "no analysis yet"
  end
  local details = {}
  if last.verdict ~= "Pass" and last.results ~= nil then
    for _, r in ipairs(last.results) do
      if r.verdict ~= "Pass" then
        if r.reason ~= nil and r.reason ~= "" then
          table.insert(details, r.rule .. ": " .. r.reason)
        elseif r.value ~= nil and r.threshold ~= nil then
          table.insert(details, r.rule .. " " .. num(r.value) .. " vs " .. num(r.threshold))
        else
          table.insert(details, r.rule .. " " .. r.verdict)
        end
      end
    end
  end
  if #details == 0 then
    return "last analysis: " .. last.verdict
  end
  return "last analysis: " .. last.verdict .. " (" .. table.concat(details, ", ") .. ")"
end

local function target_tier(status)
  if status.tiers ~= nil then
    for _, t in ipairs(status.tiers) do
      if t.role == "target" then
        return t.name
      end
    end
  end
  if status.traffic ~= nil and status.traffic.target ~= nil and status.traffic.target.tier ~= nil then
    return status.traffic.target.tier
  end
  return "the target tier"
end

local function health(obj)
  local status = obj.status
  local generation = 0
  if obj.metadata ~= nil and obj.metadata.generation ~= nil then
    generation = obj.metadata.generation
  end
  if status == nil or status.observedGeneration == nil or status.observedGeneration < generation then
    return "Progressing", "waiting for the operator"
  end

  local phase = status.phase
  local stage = status.stage or "pending"

  if phase == "RolledBack" then
    local reasons = {}
    if status.rollback ~= nil and status.rollback.reasons ~= nil then
      reasons = status.rollback.reasons
    end
    if #reasons == 0 then
      return "Degraded", "rolled back"
    end
    return "Degraded", "rolled back: " .. table.concat(reasons, "; ")
  end

  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status ~= "True" then
    degraded = nil
  end
  if phase == "Failed" or degraded ~= nil then
    local c = degraded or condition(status, "Ready")
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      return "Degraded", c.message
    end
    if c ~= nil and c.reason ~= nil then
      return "Degraded", c.reason
    end
    return "Degraded", "failed"
  end

  if phase == "Paused" then
    return "Suspended", "paused at stage " .. stage .. ", " .. num(status.targetWeight) .. "% live"
  end

  if phase == "Pending" or phase == "Progressing" then
    return "Progressing", "stage " .. stage .. ": " .. num(status.targetWeight) .. "% live, "
      .. num(status.mirrorPercent) .. "% mirrored; " .. analysis(status.lastAnalysis)
  end

  local ready = condition(status, "Ready")
  if phase == "Succeeded" then
    if ready ~= nil and ready.status == "True" then
      return "Healthy", "100% on " .. target_tier(status)
    end
    local why = "tiers not ready"
    if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
      why = ready.message
    end
    return "Progressing", "rollout succeeded, waiting for tiers: " .. why
  end

  if phase == nil then
    -- Tiers are being set up; the rollout has not written its phase yet.
    local progressing = condition(status, "Progressing")
    if progressing ~= nil and progressing.message ~= nil and progressing.message ~= "" then
      return "Progressing", "waiting for the rollout to start: " .. progressing.message
    end
    return "Progressing", "waiting for the rollout to start"
  end

  return "Unknown", "unknown phase " .. tostring(phase)
end

hs.status, hs.message = health(obj)
return hs
