# Renders every template of a BOSH job the way the Director does, with Ruby's stdlib only:
#   ruby render.rb JOB_DIR CONTEXT_JSON OUT_DIR
# CONTEXT_JSON holds {"properties": {...manifest job properties...}, "spec": {...instance...}}.
# Semantics kept from BOSH: only properties declared in the job spec are visible, manifest values
# override spec defaults, p(name) raises for an unset property without default, p(name, default),
# p([names]) (first set wins), if_p with an else block, spec.* fields, and no links (if_link is
# false, link raises). Files under bin/ become executable. Errors: "TEMPLATE: message", exit 1.
require "erb"
require "json"
require "yaml"
require "ostruct"
require "fileutils"

class UnknownProperty < StandardError; end

# The object if_p/if_link return: `.else { }` runs only when the condition was false.
class ElseBlock
  def initialize(active) = @active = active
  def else
    yield if @active
    nil
  end
end

class RenderContext
  attr_reader :spec

  def initialize(properties, spec)
    @properties = properties
    @spec = OpenStruct.new(spec)
  end

  def p(*args)
    names = Array(args[0])
    names.each do |name|
      value = lookup(name)
      return value unless value.nil?
    end
    return args[1] if args.length == 2
    raise UnknownProperty, "Can't find property '#{names.join("', '")}'"
  end

  def if_p(*names)
    values = names.map { |name| lookup(name) }
    return ElseBlock.new(true) if values.any?(&:nil?)
    yield(*values)
    ElseBlock.new(false)
  end

  def if_link(_name) = ElseBlock.new(true)

  def link(name)
    raise UnknownProperty, "Can't find link '#{name}': this harness renders without links"
  end

  def get_binding = binding

  private

  def lookup(name)
    name.split(".").reduce(@properties) do |node, key|
      break nil unless node.is_a?(Hash) && node.key?(key)
      node[key]
    end
  end
end

def dig_path(hash, name)
  name.split(".").reduce(hash) do |node, key|
    break nil unless node.is_a?(Hash) && node.key?(key)
    node[key]
  end
end

def set_path(hash, name, value)
  *parents, last = name.split(".")
  node = parents.reduce(hash) { |h, key| h[key] ||= {} }
  node[last] = value
end

# Declared properties only: manifest value if set, else the spec default, else absent.
def effective_properties(spec, manifest)
  (spec["properties"] || {}).each_with_object({}) do |(name, decl), out|
    value = dig_path(manifest, name)
    value = decl["default"] if value.nil? && decl.is_a?(Hash) && decl.key?("default")
    set_path(out, name, value) unless value.nil?
  end
end

job_dir, context_file, out_dir = ARGV
abort "usage: ruby render.rb JOB_DIR CONTEXT_JSON OUT_DIR" unless out_dir
job_spec = YAML.safe_load(File.read(File.join(job_dir, "spec")))
context = JSON.parse(File.read(context_file))
properties = effective_properties(job_spec, context.fetch("properties", {}))
instance = { "name" => "pcap", "id" => "00000000-0000-0000-0000-000000000000", "index" => 0,
             "address" => "10.0.0.10", "ip" => "10.0.0.10", "deployment" => "pcap",
             "bootstrap" => true, "az" => "z1", "networks" => {} }.merge(context.fetch("spec", {}))

failed = false
(job_spec["templates"] || {}).each do |source, dest|
  begin
    template = File.read(File.join(job_dir, "templates", source))
    ctx = RenderContext.new(properties, instance)
    text = ERB.new(template, trim_mode: "-").result(ctx.get_binding)
    path = File.join(out_dir, dest)
    FileUtils.mkdir_p(File.dirname(path))
    File.write(path, text)
    File.chmod(dest.start_with?("bin/") ? 0o755 : 0o644, path)
  rescue StandardError, ScriptError => e
    warn "#{source}: #{e.message}"
    failed = true
  end
end
exit(failed ? 1 : 0)
