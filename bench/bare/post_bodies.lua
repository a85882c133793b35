-- wrk: POST a different pre-signed body on every request (one body a line in BODIES_FILE).
local bodies = {}
local index = 0

function init(args)
  local path = os.getenv("BODIES_FILE")
  for line in io.lines(path) do
    bodies[#bodies + 1] = line
  end
  -- Each wrk thread starts at its own offset, so threads never send the same body.
  index = (tonumber(os.getenv("BODIES_OFFSET") or "0") or 0)
end

function request()
  index = index + 1
  if index > #bodies then
    index = 1
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/jwt"}, bodies[index])
end
