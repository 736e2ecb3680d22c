-- Argo CD health check for quantrollout.io/QuantizedModel.
-- Argo CD runs it with the object as `obj` and reads hs.status and hs.message.
-- It uses only Lua's base and table libraries: Argo CD runs argocd-cm health scripts in
-- gopher-lua with just base, table, package and a safe os (no string, no math) unless
-- resource.customizations.useOpenLibs is set. Tested under that engine by
-- tests/integration/test_argocd.py; argocd-cm-snippet.yaml embeds this file verbatim.
local hs = {}

-- A value as text: numbers as Argo CD prints them (10 -> "10", 0.21 -> "0.21"), nil as `none`.
local function text(value, none)
  if value == nil then
    return none or "0"
  end
  return tostring(value)
end

local function list(value)
  if type(value) == "table" then
    return value
  end
  return {}
end

local function condition(status, ctype)
  for _, c in ipairs(list(status.conditions)) do
    if type(c) == "table" and c.type == ctype then
      return c
    end
  end
  return nil
end

local function has_text(value)
  return type(value) == "string" and value ~= ""
end

-- "last analysis: Pass", or the verdict with every rule that did not pass and why.
local function analysis(last)
  if type(last) ~= "table" or last.verdict == nil then
    return "no analysis yet"
  end
  local details = {}
  if last.verdict ~= "Pass" then
    for _, r in ipairs(list(last.results)) do
      if type(r) == "table" and r.verdict ~= "Pass" then
        local rule = text(r.rule, "a rule")
        if has_text(r.reason) then
          table.insert(details, rule .. ": " .. r.reason)
        elseif r.value ~= nil and r.threshold ~= nil then
          table.insert(details, rule .. " " .. text(r.value) .. " vs " .. text(r.threshold))
        else
          table.insert(details, rule .. " " .. text(r.verdict, "no verdict"))
        end
      end
    end
  end
  if #details == 0 then
    return "last analysis: " .. text(last.verdict)
  end
  return "last analysis: " .. text(last.verdict) .. " (" .. table.concat(details, ", ") .. ")"
end

local function target_tier(status)
  for _, t in ipairs(list(status.tiers)) do
    if type(t) == "table" and t.role == "target" and t.name ~= nil then
      return text(t.name)
    end
  end
  local traffic = status.traffic
  if type(traffic) == "table" and type(traffic.target) == "table" and traffic.target.tier ~= nil then
    return text(traffic.target.tier)
  end
  return "the target tier"
end

local function health(obj)
  local status = obj.status
  local generation = 0
  if type(obj.metadata) == "table" and type(obj.metadata.generation) == "number" then
    generation = obj.metadata.generation
  end
  if type(status) ~= "table" or type(status.observedGeneration) ~= "number"
    or status.observedGeneration < generation then
    return "Progressing", "waiting for the operator"
  end

  local phase = status.phase
  local stage = text(status.stage, "pending")

  if phase == "RolledBack" then
    local reasons = {}
    for _, r in ipairs(list(status.rollback and status.rollback.reasons)) do
      table.insert(reasons, text(r))
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
    if c ~= nil and has_text(c.message) then
      return "Degraded", c.message
    end
    if c ~= nil and has_text(c.reason) then
      return "Degraded", c.reason
    end
    return "Degraded", "failed"
  end

  if phase == "Paused" then
    return "Suspended", "paused at stage " .. stage .. ", " .. text(status.targetWeight) .. "% live"
  end

  if phase == "Pending" or phase == "Progressing" then
    return "Progressing", "stage " .. stage .. ": " .. text(status.targetWeight) .. "% live, "
      .. text(status.mirrorPercent) .. "% mirrored; " .. analysis(status.lastAnalysis)
  end

  local ready = condition(status, "Ready")
  if phase == "Succeeded" then
    if ready ~= nil and ready.status == "True" then
      return "Healthy", "100% on " .. target_tier(status)
    end
    local why = "tiers not ready"
    if ready ~= nil and has_text(ready.message) then
      why = ready.message
    end
    return "Progressing", "rollout succeeded, waiting for tiers: " .. why
  end

  if phase == nil then
    -- Tiers are being set up; the rollout has not written its phase yet.
    local progressing = condition(status, "Progressing")
    if progressing ~= nil and has_text(progressing.message) then
      return "Progressing", "waiting for the rollout to start: " .. progressing.message
    end
    return "Progressing", "waiting for the rollout to start"
  end

  return "Unknown", "unknown phase " .. text(phase) .. " (a newer operator than this health check?)"
end

-- A status this script cannot read (a field of an unexpected type) is Unknown with the reason,
-- never a Lua error (Argo CD would show a stack trace instead of a health).
local ok, status, message = pcall(health, obj)
if ok then
  hs.status, hs.message = status, message
else
  hs.status, hs.message = "Unknown", "cannot read the QuantizedModel status: " .. text(status, "")
end
return hs
